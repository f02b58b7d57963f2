# Small helpers so every CMakeLists.txt in the tree stays a short list.

# Flags for code we own. Third-party headers come in as SYSTEM includes, so
# -Werror applies to our code only.
set(SLUICE_WARNING_FLAGS -Wall -Wextra -Wshadow -Wnon-virtual-dtor -Wpedantic)
if(SLUICE_WERROR)
  list(APPEND SLUICE_WARNING_FLAGS -Werror)
endif()
if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  list(APPEND SLUICE_WARNING_FLAGS -Wthread-safety)
endif()

if(SLUICE_SANITIZE)
  add_compile_options(-fsanitize=${SLUICE_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=${SLUICE_SANITIZE})
endif()

function(sluice_target_defaults target)
  target_compile_options(${target} PRIVATE ${SLUICE_WARNING_FLAGS})
  target_include_directories(${target} PUBLIC $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}>)
endfunction()

# sluice_library(NAME SRCS ... DEPS ...)
function(sluice_library name)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SRCS})
  sluice_target_defaults(${name})
  # Public headers use C++20 (std::span, concepts): whoever links needs it too.
  target_compile_features(${name} PUBLIC cxx_std_20)
  target_link_libraries(${name} PUBLIC ${ARG_DEPS})
endfunction()

# sluice_binary(NAME SRCS ... DEPS ...)
function(sluice_binary name)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SRCS})
  sluice_target_defaults(${name})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS})
endfunction()

# sluice_test(NAME SRCS ... DEPS ... [LABELS ...])
# One GoogleTest binary, registered with CTest test by test so failures name
# the exact case and ctest -j spreads them over both cores.
include(GoogleTest)
function(sluice_test name)
  if(NOT SLUICE_BUILD_TESTS)
    return()
  endif()
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SRCS})
  sluice_target_defaults(${name})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gtest_main)
  gtest_discover_tests(${name}
    DISCOVERY_TIMEOUT 30
    TEST_LIST ${name}_TESTS
    PROPERTIES TIMEOUT 120)
  # Labels go on in a second include file: gtest_discover_tests flattens a
  # list passed through PROPERTIES, so "LABELS unit runtime" would keep only
  # "unit" (and turn "runtime" into a bogus property name).
  if(ARG_LABELS)
    set(labels_file "${CMAKE_CURRENT_BINARY_DIR}/${name}_labels.cmake")
    file(WRITE "${labels_file}"
      "if(${name}_TESTS)\n"
      "  set_tests_properties(\${${name}_TESTS} PROPERTIES LABELS \"${ARG_LABELS}\")\n"
      "endif()\n")
    set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES "${labels_file}")
  endif()
endfunction()
