# sluice_flatbuffers_cpp(NAME SCHEMAS a.fbs b.fbs [INCLUDE_DIRS dir...])
#
# Runs flatc --cpp on each schema into the build tree and wraps the generated
# headers in an INTERFACE library NAME that targets link to. Editing a schema
# regenerates its header; the generated code is never checked in. Runs the
# flatc that SluiceIdl.cmake found (SLUICE_FLATC).
find_package(FlatBuffers REQUIRED)

function(sluice_flatbuffers_cpp name)
  cmake_parse_arguments(ARG "" "" "SCHEMAS;INCLUDE_DIRS" ${ARGN})
  set(out_dir ${CMAKE_CURRENT_BINARY_DIR}/${name}_generated)
  set(include_flags)
  foreach(dir ${ARG_INCLUDE_DIRS})
    list(APPEND include_flags -I ${dir})
  endforeach()
  set(outputs)
  foreach(schema ${ARG_SCHEMAS})
    get_filename_component(abs ${schema} ABSOLUTE)
    get_filename_component(stem ${schema} NAME_WE)
    set(out ${out_dir}/${stem}_generated.h)
    add_custom_command(
      OUTPUT ${out}
      COMMAND ${SLUICE_FLATC} --cpp --scoped-enums -o ${out_dir}
              ${include_flags} ${abs}
      DEPENDS ${abs}
      COMMENT "flatc --cpp ${schema}"
      VERBATIM)
    list(APPEND outputs ${out})
  endforeach()
  add_custom_target(${name}_gen DEPENDS ${outputs})
  add_library(${name} INTERFACE)
  add_dependencies(${name} ${name}_gen)
  target_include_directories(${name} SYSTEM INTERFACE $<BUILD_INTERFACE:${out_dir}>)
  target_link_libraries(${name} INTERFACE flatbuffers::flatbuffers)
endfunction()
