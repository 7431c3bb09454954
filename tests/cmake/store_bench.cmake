# Store benchmark (not a test): mpirun -n 2 build/tests/bench_store [OUT_DIR] [ROWS_PER_RANK] [D]
add_executable(bench_store ${PROJECT_SOURCE_DIR}/tests/bench/bench_store.c)
target_link_libraries(bench_store PRIVATE resae_lib)
