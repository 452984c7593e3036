# Script run by CTest: install the built tree into WORK_DIR/prefix, then configure, build and run
# a downstream project (CONSUMER_SOURCE_DIR, target EXECUTABLE) in WORK_DIR/build against it with
# find_package(nordf); its output must match EXPECT.
file(REMOVE_RECURSE ${WORK_DIR})
execute_process(COMMAND ${CMAKE_COMMAND} --install ${NORDF_BUILD_DIR} --prefix ${WORK_DIR}/prefix
  RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "cmake --install failed (${rc})")
endif()
foreach(f lib/cmake/nordf/nordfConfig.cmake lib/cmake/nordf/nordfConfigVersion.cmake include/libnordf/nordf.h)
  if(NOT EXISTS ${WORK_DIR}/prefix/${f})
    message(FATAL_ERROR "install did not produce ${f}")
  endif()
endforeach()
# The installed apps find the installed library on their own (install RPATH), from any directory.
foreach(app nordf-basic nordf-plot nordf-bench)
  if(EXISTS ${WORK_DIR}/prefix/bin/${app})
    execute_process(COMMAND ${WORK_DIR}/prefix/bin/${app} --help WORKING_DIRECTORY /
      RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
    if(NOT rc EQUAL 0 OR NOT out MATCHES "${app}")
      message(FATAL_ERROR "installed ${app} --help failed (exit ${rc}): ${err}")
    endif()
  endif()
endforeach()
# A sanitizer build of libnordf needs its consumers linked with the same runtime.
set(flags "")
if(SANITIZE)
  set(flags "-DCMAKE_CXX_FLAGS=-fsanitize=address,undefined" "-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=address,undefined")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -S ${CONSUMER_SOURCE_DIR} -B ${WORK_DIR}/build
  -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix -DCMAKE_BUILD_TYPE=Release ${flags} RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "configuring the consumer failed (${rc})")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK_DIR}/build RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "building the consumer failed (${rc})")
endif()
execute_process(COMMAND ${WORK_DIR}/build/${EXECUTABLE} WORKING_DIRECTORY ${WORK_DIR}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out)
message("${out}")
if(rc)
  message(FATAL_ERROR "${EXECUTABLE} failed (${rc})")
endif()
if(NOT out MATCHES "${EXPECT}")
  message(FATAL_ERROR "${EXECUTABLE}: output does not match '${EXPECT}'")
endif()
