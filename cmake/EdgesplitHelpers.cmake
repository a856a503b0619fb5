# edgesplit_test(NAME SOURCES src... DEPS lib... [LABELS l...] [TIMEOUT s])
# Builds a GoogleTest binary and registers it with CTest. Tests run from the
# repository root so they find ../shared and the tests/ data directory.
function(edgesplit_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_DEPS} GTest::gtest GTest::gmock
                                        GTest::gtest_main)
  if(EDGESPLIT_TSAN)
    target_link_libraries(${name} PRIVATE edgesplit_tsan_shim)
  endif()
  add_test(NAME ${name} COMMAND ${name}
           WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 600)
  endif()
  set_tests_properties(${name} PROPERTIES TIMEOUT ${T_TIMEOUT}
                       ENVIRONMENT "EDGESPLIT_SOURCE_DIR=${PROJECT_SOURCE_DIR}")
  if(T_LABELS)
    set_tests_properties(${name} PROPERTIES LABELS "${T_LABELS}")
  endif()
endfunction()

# edgesplit_reuse_pch(TARGET): TARGET reuses the runtime library's
# precompiled ATen header (~5 s less per translation unit here). GCC skips a
# precompiled header built with other code-generation flags, so executables
# compile as position-independent code like the library (-fPIC rather than
# -fPIE; they still link as PIE). A skipped header is a warning
# (-Winvalid-pch), never an error: the build stays correct, only slower.
function(edgesplit_reuse_pch target)
  target_precompile_headers(${target} REUSE_FROM edgesplit_runtime)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wno-error=invalid-pch>)
  get_target_property(type ${target} TYPE)
  if(type STREQUAL "EXECUTABLE")
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-fPIC>)
  endif()
endfunction()
