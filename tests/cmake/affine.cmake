# Affine maps (METHOD.md §2-§3): the distributed fit against serial LAPACK, a numpy fixture
# (tests/reference/affine_ref.py), the lambda retry path, cancellation, sub-communicators, edges.
add_executable(test_affine ${PROJECT_SOURCE_DIR}/tests/affine/test_affine.c)
target_link_libraries(test_affine PRIVATE resae_lib)
foreach(case serial numpy retry identity offset subcomm edge)
  resae_add_mpi(affine_${case} TARGET test_affine RANKS 1 2 4 ARGS ${case} TIMEOUT 120 LABELS affine)
endforeach()

# Benchmark (not a test): tests/bench/bench_affine.c prints ratios against DSYRK and serial dposv_.
add_executable(bench_affine ${PROJECT_SOURCE_DIR}/tests/bench/bench_affine.c)
target_link_libraries(bench_affine PRIVATE resae_lib)
set_target_properties(bench_affine PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/bench)
