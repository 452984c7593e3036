# Finds every third-party package libnordf builds against. Debian 12 ships all of them;
# scripts/setup.sh installs them.
find_package(Torch REQUIRED)
find_package(fmt REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(Threads REQUIRED)
find_package(ZLIB REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(PLPLOT REQUIRED IMPORTED_TARGET plplot)

# stb is header-only for the two parts libnordf uses (stb_image, stb_image_write).
find_path(STB_INCLUDE_DIR stb_image.h PATH_SUFFIXES stb REQUIRED)
add_library(nordf_stb INTERFACE)
target_include_directories(nordf_stb SYSTEM INTERFACE ${STB_INCLUDE_DIR})

# matio writes the .mat files the tests read back (libnordf reads them with its own bounded
# reader, libnordf/data/mat.h).
if(NORDF_BUILD_TESTS)
  pkg_check_modules(MATIO REQUIRED IMPORTED_TARGET matio)
endif()
