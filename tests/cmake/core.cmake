resae_add_unit(test_core SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/test_core.c)

add_executable(test_mpi_smoke ${PROJECT_SOURCE_DIR}/tests/unit/test_mpi_smoke.c)
target_link_libraries(test_mpi_smoke PRIVATE resae_lib)
resae_add_mpi(mpi_smoke TARGET test_mpi_smoke RANKS 1 2 4)

# BLAS guard: the decision in every case (synthetic CPUs), the self-test, and resae version end to end
# under each state of OPENBLAS_CORETYPE with a shim whose kernels compute wrong results.
resae_add_unit(test_blas_guard SOURCES ${PROJECT_SOURCE_DIR}/tests/blas/test_blas_guard.c LABELS blas)
add_library(blas_fault SHARED ${PROJECT_SOURCE_DIR}/tests/blas/blas_fault.c)
target_include_directories(blas_fault PRIVATE ${CBLAS_INCLUDE_DIR})
target_link_libraries(blas_fault PRIVATE ${CMAKE_DL_LIBS})
resae_add_cmd(blas_guard_cases LABELS blas COMMAND bash ${PROJECT_SOURCE_DIR}/tests/blas/guard_cases.sh
  $<TARGET_FILE:resae> $<TARGET_FILE:blas_fault> PASS_REGEX "blas guard cases: [0-9]+ passed, 0 failed")
add_executable(test_pdposv_selftest ${PROJECT_SOURCE_DIR}/tests/blas/test_pdposv_selftest.c)
target_link_libraries(test_pdposv_selftest PRIVATE resae_lib)
resae_add_mpi(blas_pdposv_selftest TARGET test_pdposv_selftest ARGS ok LABELS blas)
foreach(np 1 2 4)
  add_test(NAME blas_pdposv_selftest_fault_np${np}
    COMMAND ${RESAE_MPIEXEC} -x LD_PRELOAD=$<TARGET_FILE:blas_fault> -x RESAE_TEST_BLAS_FAULT=pdposv
      ${MPIEXEC_NUMPROC_FLAG} ${np} $<TARGET_FILE:test_pdposv_selftest> fail)
  set_tests_properties(blas_pdposv_selftest_fault_np${np} PROPERTIES
    ENVIRONMENT "${RESAE_TEST_ENV};ASAN_OPTIONS=verify_asan_link_order=0:detect_leaks=0"
    PROCESSORS ${np} TIMEOUT 120 LABELS "mpi;blas")
endforeach()
resae_add_cmd(cli_help COMMAND $<TARGET_FILE:resae> help PASS_REGEX "exit codes: 0 done")
resae_add_cmd(cli_unknown COMMAND $<TARGET_FILE:resae> frobnicate WILL_FAIL)
resae_add_cmd(cli_no_args COMMAND $<TARGET_FILE:resae> WILL_FAIL)

# Benchmark (not a test): tests/bench/blas_guard_bench.sh
add_executable(bench_sgemm ${PROJECT_SOURCE_DIR}/tests/bench/bench_sgemm.c)
target_link_libraries(bench_sgemm PRIVATE resae_lib)
set_target_properties(bench_sgemm PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/bench)
