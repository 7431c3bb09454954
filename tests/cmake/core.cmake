resae_add_unit(test_core SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/test_core.c)

add_executable(test_mpi_smoke ${PROJECT_SOURCE_DIR}/tests/unit/test_mpi_smoke.c)
target_link_libraries(test_mpi_smoke PRIVATE resae_core)
resae_add_mpi(mpi_smoke TARGET test_mpi_smoke RANKS 1 2 4)

# BLAS guard: with OPENBLAS_CORETYPE unset, resae re-execs itself into the native kernels;
# a forced generic kernel set is refused with a message naming the fix, or allowed explicitly.
if(NOT RESAE_TEST_CORETYPE STREQUAL "RESAE_TEST_NOTHING=1")
  resae_add_cmd(blas_guard_fixes COMMAND env -u OPENBLAS_CORETYPE $<TARGET_FILE:resae> version
    PASS_REGEX "kernels (SkylakeX|Haswell|Zen|CooperLake|SapphireRapids)")
  resae_add_cmd(blas_guard_refuses COMMAND env OPENBLAS_CORETYPE=Prescott $<TARGET_FILE:resae> version
    PASS_REGEX "Prescott.*OPENBLAS_CORETYPE=")
  resae_add_cmd(blas_guard_refuses_exit COMMAND env OPENBLAS_CORETYPE=Prescott $<TARGET_FILE:resae> version
    WILL_FAIL)
  resae_add_cmd(blas_guard_allow COMMAND env OPENBLAS_CORETYPE=Prescott RESAE_ALLOW_GENERIC_BLAS=1
    $<TARGET_FILE:resae> version PASS_REGEX "kernels Prescott \\[allowed generic")
endif()
resae_add_cmd(cli_help COMMAND $<TARGET_FILE:resae> help PASS_REGEX "exit codes: 0 done")
resae_add_cmd(cli_unknown COMMAND $<TARGET_FILE:resae> frobnicate WILL_FAIL)
resae_add_cmd(cli_no_args COMMAND $<TARGET_FILE:resae> WILL_FAIL)

# Benchmark (not a test): tests/bench/blas_guard_bench.sh
add_executable(bench_sgemm ${PROJECT_SOURCE_DIR}/tests/bench/bench_sgemm.c)
target_link_libraries(bench_sgemm PRIVATE resae_core)
set_target_properties(bench_sgemm PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/bench)
