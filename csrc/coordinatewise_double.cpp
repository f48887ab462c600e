// The double instantiations of coordinatewise.cpp, in their own translation unit so the two
// halves of that slow-to-compile file build in parallel (see the top of coordinatewise.cpp).
#define BYZKERN_COORDINATEWISE_TYPE double
#include "coordinatewise.cpp"
