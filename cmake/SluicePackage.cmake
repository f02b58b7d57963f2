# Sluice as a dependency. One list of what a consumer gets, used three ways:
#   - add_subdirectory / FetchContent: Sluice::<name> aliases in this build;
#   - cmake --install: libraries, headers, programs, docs, the CMake package
#     (find_package(Sluice) -> the same Sluice::<name> targets, sluice_add_idl)
#     and sluice.pc;
#   - cpack -G DEB: the same files as a Debian package.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(SLUICE_INSTALL_INCLUDEDIR ${CMAKE_INSTALL_INCLUDEDIR}/sluice)
set(SLUICE_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/Sluice)

# sluice_export(LIBRARIES sluice_foo... PROGRAMS name=target...)
#
# sluice_foo becomes Sluice::foo; a program `name=target` becomes
# Sluice::name (e.g. idlc=sluice-idlc, whose file is still sluice-idlc).
# List libraries top-down (each before what it links): sluice.pc links them
# in this order.
function(sluice_export)
  cmake_parse_arguments(ARG "" "" "LIBRARIES;PROGRAMS" ${ARGN})
  set(targets)
  foreach(lib ${ARG_LIBRARIES})
    string(REGEX REPLACE "^sluice_" "" name ${lib})
    add_library(Sluice::${name} ALIAS ${lib})
    set_target_properties(${lib} PROPERTIES EXPORT_NAME ${name})
    target_include_directories(${lib} INTERFACE $<INSTALL_INTERFACE:${SLUICE_INSTALL_INCLUDEDIR}>)
    list(APPEND targets ${lib})
  endforeach()
  foreach(program ${ARG_PROGRAMS})
    string(REPLACE "=" ";" pair ${program})
    list(GET pair 0 name)
    list(GET pair 1 target)
    add_executable(Sluice::${name} ALIAS ${target})
    set_target_properties(${target} PROPERTIES EXPORT_NAME ${name})
    list(APPEND targets ${target})
  endforeach()
  # What install and cpack ship, to build just that: ninja sluice_dist.
  add_custom_target(sluice_dist)
  add_dependencies(sluice_dist ${targets})
  install(TARGETS ${targets} EXPORT SluiceTargets
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
    RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  _sluice_write_pkg_config("${ARG_LIBRARIES}")
endfunction()

# sluice.pc for builds without CMake. Relocatable (${pcfiledir}), so it also
# works from a `dpkg -x` root or any --prefix. Requires lists the pkg-config
# names of the libraries' abseil and FlatBuffers dependencies.
function(_sluice_write_pkg_config libraries)
  set(libs)
  set(requires)
  foreach(lib ${libraries})
    get_target_property(type ${lib} TYPE)
    if(NOT type STREQUAL "INTERFACE_LIBRARY")
      string(APPEND libs " -l${lib}")
    endif()
    get_target_property(deps ${lib} INTERFACE_LINK_LIBRARIES)
    foreach(dep ${deps})
      if(dep MATCHES "^absl::(.+)$")
        list(APPEND requires absl_${CMAKE_MATCH_1})
      elseif(dep MATCHES "^flatbuffers::")
        list(APPEND requires flatbuffers)
      endif()
    endforeach()
  endforeach()
  list(REMOVE_DUPLICATES requires)
  list(JOIN requires " " SLUICE_PC_REQUIRES)
  set(SLUICE_PC_LIBS "${libs}")
  file(RELATIVE_PATH SLUICE_PC_PREFIX /${CMAKE_INSTALL_LIBDIR}/pkgconfig /)
  string(REGEX REPLACE "/$" "" SLUICE_PC_PREFIX ${SLUICE_PC_PREFIX})
  configure_file(${PROJECT_SOURCE_DIR}/cmake/sluice.pc.in ${PROJECT_BINARY_DIR}/sluice.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/sluice.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endfunction()

# Public headers: the runtime's, minus what only Sluice's own code includes
# (the test harness, the service manager's wire schema).
install(DIRECTORY ${PROJECT_SOURCE_DIR}/ipc DESTINATION ${SLUICE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.h"
  PATTERN "testing" EXCLUDE
  REGEX "/service/wire\\.h$" EXCLUDE)

# The CMake package, installed and in the build tree (-DSluice_DIR=build).
install(EXPORT SluiceTargets NAMESPACE Sluice:: DESTINATION ${SLUICE_INSTALL_CMAKEDIR})
export(EXPORT SluiceTargets NAMESPACE Sluice:: FILE ${PROJECT_BINARY_DIR}/SluiceTargets.cmake)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/SluiceConfig.cmake.in
  ${PROJECT_BINARY_DIR}/SluiceConfig.cmake INSTALL_DESTINATION ${SLUICE_INSTALL_CMAKEDIR})
# 0.x: a minor version may break the API, so only the same minor matches.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/SluiceConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
configure_file(${PROJECT_SOURCE_DIR}/cmake/SluiceIdl.cmake ${PROJECT_BINARY_DIR}/SluiceIdl.cmake
  COPYONLY)
install(FILES ${PROJECT_BINARY_DIR}/SluiceConfig.cmake ${PROJECT_BINARY_DIR}/SluiceConfigVersion.cmake
  ${PROJECT_SOURCE_DIR}/cmake/SluiceIdl.cmake DESTINATION ${SLUICE_INSTALL_CMAKEDIR})

# systemd units, once services/ has them.
file(GLOB sluice_units ${PROJECT_SOURCE_DIR}/services/*/*.service
  ${PROJECT_SOURCE_DIR}/services/*/*.socket)
if(sluice_units)
  install(FILES ${sluice_units} DESTINATION lib/systemd/system)
endif()

install(FILES ${PROJECT_SOURCE_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/docs/ DESTINATION ${CMAKE_INSTALL_DOCDIR})

# cpack -G DEB in the build tree: sluice_<version>_<arch>.deb. Depends: the
# shared libraries the programs load (dpkg-shlibdeps), plus what the headers,
# the CMake package and sluice_add_idl need at a consumer's build time.
set(CPACK_PACKAGE_NAME sluice)
set(CPACK_PACKAGE_VENDOR "Sluice")
set(CPACK_PACKAGE_CONTACT "Sluice maintainers <sluice@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Binder-style shared-memory IPC for Linux (C++20)")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION devel)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "libabsl-dev, libflatbuffers-dev, flatbuffers-compiler")
set(CPACK_GENERATOR DEB)
include(CPack)
