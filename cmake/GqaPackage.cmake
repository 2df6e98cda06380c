# The installed package: per backend variant one self-contained static archive
# (the runtime, its AOT pipelines and their Halide runtime), the public headers,
# a CMake package config with a component per variant, and pkg-config files.
# Nothing in it needs libHalide, at build or at run time.
#
#   <prefix>/include/gqa/...
#   <prefix>/lib/libgqa_x86.a, libgqa_x86_cuda.a, libgqa_x86_opencl.a   (x86-64)
#   <prefix>/lib/aarch64-linux-gnu/libgqa_arm.a            (from the aarch64 half)
#   <prefix>/lib/cmake/gqa/gqaConfig.cmake, gqaConfigVersion.cmake
#   <prefix>/lib/pkgconfig/gqa.pc (x86), gqa-cuda.pc, gqa-opencl.pc, gqa-arm.pc

include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# gqa_package_archive(<runtime target> <pipeline targets...>): merges the runtime's
# archive and every archive its pipelines link into lib<runtime>.a under
# ${PROJECT_BINARY_DIR}/package (an ar MRI script keeps members of the same name
# apart), and returns its path in GQA_PACKAGE_ARCHIVE.
function(gqa_package_archive runtime)
    set(archives $<TARGET_FILE:${runtime}>)
    foreach (pipelines IN LISTS ARGN)
        get_target_property(libraries ${pipelines} INTERFACE_LINK_LIBRARIES)
        foreach (library IN LISTS libraries)
            list(APPEND archives $<TARGET_FILE:${library}>)
        endforeach ()
    endforeach ()
    list(REMOVE_DUPLICATES archives)  # the GPU pipelines share the x86 Halide runtime
    set(output ${PROJECT_BINARY_DIR}/package/lib${runtime}.a)
    set(script ${PROJECT_BINARY_DIR}/package/lib${runtime}.mri)
    list(TRANSFORM archives PREPEND "ADDLIB ")
    list(JOIN archives "\n" additions)
    file(GENERATE OUTPUT ${script} CONTENT "CREATE ${output}\n${additions}\nSAVE\nEND\n")
    add_custom_command(OUTPUT ${output}
                       COMMAND ${CMAKE_COMMAND} -E remove -f ${output}
                       COMMAND ${CMAKE_AR} -M < ${script}
                       DEPENDS ${runtime} ${script}
                       COMMENT "Merging lib${runtime}.a: runtime, pipelines and Halide runtime")
    add_custom_target(${runtime}_package ALL DEPENDS ${output})
    set(GQA_PACKAGE_ARCHIVE ${output} PARENT_SCOPE)
endfunction()

gqa_package_archive(gqa_${GQA_BACKEND} gqa_pipelines_${GQA_BACKEND})
set(gqa_archives ${GQA_PACKAGE_ARCHIVE})
foreach (gpu IN ITEMS cuda opencl)
    if (TARGET gqa_${GQA_BACKEND}_${gpu})
        gqa_package_archive(gqa_${GQA_BACKEND}_${gpu} gqa_pipelines_${GQA_BACKEND} gqa_pipelines_${gpu})
        list(APPEND gqa_archives ${GQA_PACKAGE_ARCHIVE})
    endif ()
endforeach ()

# The aarch64 half (cmake/GqaAarch64.cmake) only builds its archive; the host
# build installs everything, that archive included.
if (GQA_BACKEND STREQUAL "arm")
    return()
endif ()

# gqa_package_pkgconfig(<name> <library dir> <library>): <name>.pc for one archive.
# Static archives name what they need themselves: the C++ library, threads, dlopen.
function(gqa_package_pkgconfig name libdir library)
    set(GQA_PC_NAME ${name})
    set(GQA_PC_LIBDIR ${libdir})
    set(GQA_PC_LIBRARY ${library})
    configure_file(${PROJECT_SOURCE_DIR}/cmake/gqa.pc.in ${PROJECT_BINARY_DIR}/package/${name}.pc @ONLY)
    install(FILES ${PROJECT_BINARY_DIR}/package/${name}.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endfunction()

install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/gqa DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES ${gqa_archives} DESTINATION ${CMAKE_INSTALL_LIBDIR})
gqa_package_pkgconfig(gqa ${CMAKE_INSTALL_LIBDIR} gqa_x86)
set(GQA_PACKAGE_COMPONENTS x86)
foreach (gpu IN ITEMS cuda opencl)
    if (TARGET gqa_x86_${gpu})
        gqa_package_pkgconfig(gqa-${gpu} ${CMAKE_INSTALL_LIBDIR} gqa_x86_${gpu})
        list(APPEND GQA_PACKAGE_COMPONENTS ${gpu})
    endif ()
endforeach ()
if (GQA_BUILD_AARCH64)
    install(FILES ${GQA_AARCH64_BINARY_DIR}/package/libgqa_arm.a DESTINATION ${CMAKE_INSTALL_LIBDIR}/aarch64-linux-gnu)
    gqa_package_pkgconfig(gqa-arm ${CMAKE_INSTALL_LIBDIR}/aarch64-linux-gnu gqa_arm)
    list(APPEND GQA_PACKAGE_COMPONENTS arm)
endif ()

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/gqaConfig.cmake.in ${PROJECT_BINARY_DIR}/package/gqaConfig.cmake
                              INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/gqa)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/package/gqaConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/package/gqaConfig.cmake ${PROJECT_BINARY_DIR}/package/gqaConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/gqa)
