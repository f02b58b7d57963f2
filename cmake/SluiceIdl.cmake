# sluice_add_idl(TARGET SCHEMA.fbs... [INCLUDE_DIRS DIR...] [FLATC_ARGS ARG...]
#                [OUTPUT_DIR DIR])
#
# Compiles service interfaces for TARGET in one line: runs flatc --cpp (the
# tables) and sluice-idlc (proxies and stubs) on each schema into the build
# tree, adds the headers to TARGET, puts them on its include path and links
# the RPC runtime (Sluice::rpc). Editing a schema, or sluice-idlc itself,
# regenerates.
#
#   FLATC_ARGS  extra flatc flags, e.g. --gen-object-api (FooT, UnPack, Pack)
#   OUTPUT_DIR  where the headers go; relative to the current binary dir;
#               default: ${CMAKE_CURRENT_BINARY_DIR}/<TARGET>_idl
#
#   add_executable(kv_server kv_server.cc)
#   sluice_add_idl(kv_server ${PROJECT_SOURCE_DIR}/idl/example/key_value.fbs)
#   // kv_server.cc: #include "key_value_sluice.h"
#
# The same file serves Sluice's own tree, add_subdirectory/FetchContent and
# the installed package (SluiceConfig.cmake includes it), so it names tools
# only by cache variables and namespaced targets, which every directory of
# the consumer's project sees.

# flatc, found once. An imported target is visible only in the directory that
# found it, and this function runs in the consumer's directories: keep the
# path, in the cache.
if(NOT SLUICE_FLATC)
  if(TARGET flatbuffers::flatc)
    get_target_property(_sluice_flatc flatbuffers::flatc LOCATION)
    set(SLUICE_FLATC "${_sluice_flatc}" CACHE FILEPATH "flatc run by sluice_add_idl")
    unset(_sluice_flatc)
  else()
    find_program(SLUICE_FLATC flatc REQUIRED)
  endif()
endif()

function(sluice_add_idl target)
  cmake_parse_arguments(ARG "" "OUTPUT_DIR" "INCLUDE_DIRS;FLATC_ARGS" ${ARGN})
  set(out_dir ${CMAKE_CURRENT_BINARY_DIR}/${target}_idl)
  if(ARG_OUTPUT_DIR)
    get_filename_component(out_dir ${ARG_OUTPUT_DIR} ABSOLUTE BASE_DIR ${CMAKE_CURRENT_BINARY_DIR})
  endif()
  set(include_flags)
  foreach(dir ${ARG_INCLUDE_DIRS})
    get_filename_component(abs_dir ${dir} ABSOLUTE)
    list(APPEND include_flags -I ${abs_dir})
  endforeach()
  set(outputs)
  foreach(schema ${ARG_UNPARSED_ARGUMENTS})
    get_filename_component(abs ${schema} ABSOLUTE)
    get_filename_component(stem ${schema} NAME_WE)
    set(tables ${out_dir}/${stem}_generated.h)
    set(services ${out_dir}/${stem}_sluice.h)
    set(binary_schema ${out_dir}/${stem}_schema.h)
    add_custom_command(
      OUTPUT ${tables} ${services} ${binary_schema}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${out_dir}
      COMMAND ${SLUICE_FLATC} --cpp --scoped-enums ${ARG_FLATC_ARGS} -o ${out_dir}
              ${include_flags} ${abs}
      COMMAND Sluice::idlc -o ${out_dir} ${include_flags} ${abs}
      DEPENDS ${abs} Sluice::idlc
      COMMENT "IDL ${stem}.fbs -> ${stem}_generated.h, ${stem}_sluice.h, ${stem}_schema.h"
      VERBATIM)
    list(APPEND outputs ${tables} ${services} ${binary_schema})
  endforeach()
  target_sources(${target} PRIVATE ${outputs})
  # Build tree only: a consumer's installed library must not point into it.
  target_include_directories(${target} PUBLIC $<BUILD_INTERFACE:${out_dir}>)
  target_link_libraries(${target} PUBLIC Sluice::rpc)
endfunction()
