# The scheduler on a synthetic task graph (tests/sched/).
add_executable(test_sched ${PROJECT_SOURCE_DIR}/tests/sched/test_sched.c)
target_link_libraries(test_sched PRIVATE resae_core)

# group size 0 = automatic (one rank per group here: every task prefers one rank)
foreach(np 1 2 4)
  resae_add_mpi(sched_graph TARGET test_sched RANKS ${np} ARGS graph ${RESAE_TEST_OUT}/sched_graph_np${np} 0
    TIMEOUT 60)
  resae_add_mpi(sched_fail TARGET test_sched RANKS ${np} ARGS fail ${RESAE_TEST_OUT}/sched_fail_np${np} 0
    TIMEOUT 60)
endforeach()
resae_add_mpi(sched_graph_gs2 TARGET test_sched RANKS 4 ARGS graph ${RESAE_TEST_OUT}/sched_graph_gs2 2 TIMEOUT 60)
resae_add_mpi(sched_fail_gs2 TARGET test_sched RANKS 4 ARGS fail ${RESAE_TEST_OUT}/sched_fail_gs2 2 TIMEOUT 60)
