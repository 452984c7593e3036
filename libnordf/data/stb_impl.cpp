// stb_image (Debian's libstb-dev), compiled once, here.
//
// stb_image 2.27 mallocs its JPEG decoder state without clearing it, so a scan that uses a
// Huffman table no DHT segment defined decodes through whatever the heap held before: reads far
// outside the state, found by fuzzing as crashes that depend on earlier inputs. Every stb_image
// allocation is therefore zero-filled: an undefined table is then empty, and such a scan fails
// or decodes wrong pixels. What stb_image 2.27 mishandles in defined data (Huffman tables of more
// than 256 codes, PNG chunks longer than the file) is refused before it is called (image.cpp).
#include <cstdlib>

#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_FAILURE_USERMSG
#define STBI_MALLOC(size) std::calloc(1, size)
#define STBI_REALLOC(p, size) std::realloc(p, size)
#define STBI_FREE(p) std::free(p)
#include <stb_image.h>
