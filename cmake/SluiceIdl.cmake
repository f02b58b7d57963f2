# sluice_add_idl(TARGET SCHEMA.fbs... [INCLUDE_DIRS DIR...])
#
# Compiles service interfaces for TARGET in one line: runs flatc --cpp (the
# tables) and sluice-idlc (proxies and stubs) on each schema into the build
# tree, adds the headers to TARGET, puts them on its include path and links
# the RPC runtime. Editing a schema, or sluice-idlc itself, regenerates.
#
#   add_executable(kv_server kv_server.cc)
#   sluice_add_idl(kv_server ${PROJECT_SOURCE_DIR}/idl/example/key_value.fbs)
#   // kv_server.cc: #include "key_value_sluice.h"
function(sluice_add_idl target)
  cmake_parse_arguments(ARG "" "" "INCLUDE_DIRS" ${ARGN})
  set(out_dir ${CMAKE_CURRENT_BINARY_DIR}/${target}_idl)
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
      COMMAND ${SLUICE_FLATC} --cpp --scoped-enums -o ${out_dir} ${include_flags} ${abs}
      COMMAND $<TARGET_FILE:sluice-idlc> -o ${out_dir} ${include_flags} ${abs}
      DEPENDS ${abs} sluice-idlc
      COMMENT "IDL ${stem}.fbs -> ${stem}_generated.h, ${stem}_sluice.h, ${stem}_schema.h"
      VERBATIM)
    list(APPEND outputs ${tables} ${services} ${binary_schema})
  endforeach()
  target_sources(${target} PRIVATE ${outputs})
  target_include_directories(${target} PUBLIC ${out_dir})
  target_link_libraries(${target} PUBLIC sluice_rpc)
endfunction()
