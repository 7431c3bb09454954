# The scheduler on a synthetic task graph (tests/sched/).
add_executable(test_sched ${PROJECT_SOURCE_DIR}/tests/sched/test_sched.c)
target_link_libraries(test_sched PRIVATE resae_lib)

# group size 0 = automatic (one rank per group here: every task prefers one rank)
foreach(np 1 2 4)
  resae_add_mpi(sched_graph TARGET test_sched RANKS ${np} ARGS graph ${RESAE_TEST_OUT}/sched_graph_np${np} 0
    TIMEOUT 60)
  resae_add_mpi(sched_fail TARGET test_sched RANKS ${np} ARGS fail ${RESAE_TEST_OUT}/sched_fail_np${np} 0
    TIMEOUT 60)
endforeach()
resae_add_mpi(sched_graph_gs1 TARGET test_sched RANKS 2 ARGS graph ${RESAE_TEST_OUT}/sched_graph_gs1 1 TIMEOUT 60)
# one group of every rank: no coordinator thread, rank 0 decides between tasks
resae_add_mpi(sched_graph_gs4 TARGET test_sched RANKS 4 ARGS graph ${RESAE_TEST_OUT}/sched_graph_gs4 4 TIMEOUT 60)
resae_add_mpi(sched_graph_gs2 TARGET test_sched RANKS 4 ARGS graph ${RESAE_TEST_OUT}/sched_graph_gs2 2 TIMEOUT 60)
resae_add_mpi(sched_fail_gs2 TARGET test_sched RANKS 4 ARGS fail ${RESAE_TEST_OUT}/sched_fail_gs2 2 TIMEOUT 60)

# SIGKILL at random moments and restarts, SIGTERM/SIGUSR1, the exit status of a failing task
set(RESAE_SCHED_FAULTS bash ${PROJECT_SOURCE_DIR}/tests/sched/faults.sh)
foreach(cfg "1;0" "2;1" "4;2")
  list(GET cfg 0 np)
  list(GET cfg 1 gs)
  resae_add_cmd(sched_kill_np${np} COMMAND ${RESAE_SCHED_FAULTS} kill $<TARGET_FILE:test_sched> ${MPIEXEC_EXECUTABLE}
    ${RESAE_TEST_OUT} ${np} ${gs} PASS_REGEX "re-runs of finished tasks are detected" TIMEOUT 120 LABELS sched)
endforeach()
# exit 3 within 5 s of the signal (20 s under the sanitizers, whose exit-time checks take seconds)
if(RESAE_SANITIZE)
  set(RESAE_SCHED_STOP_MS 20000)
else()
  set(RESAE_SCHED_STOP_MS 5000)
endif()
foreach(cfg "2;1" "4;2")
  list(GET cfg 0 np)
  list(GET cfg 1 gs)
  resae_add_cmd(sched_term_np${np} COMMAND env RESAE_SCHED_STOP_MS=${RESAE_SCHED_STOP_MS} ${RESAE_SCHED_FAULTS} term
    $<TARGET_FILE:test_sched> ${MPIEXEC_EXECUTABLE} ${RESAE_TEST_OUT} ${np} ${gs}
    PASS_REGEX "exit 3 within [0-9]+ s, resumed, complete" TIMEOUT 120 LABELS sched)
endforeach()
resae_add_cmd(sched_failexit_np4 COMMAND ${RESAE_SCHED_FAULTS} failexit $<TARGET_FILE:test_sched> ${MPIEXEC_EXECUTABLE}
  ${RESAE_TEST_OUT} 4 1 PASS_REGEX "failed and skipped tasks reported" TIMEOUT 120 LABELS sched)

foreach(np 1 2 4)
  resae_add_mpi(sched_api TARGET test_sched RANKS ${np} ARGS api ${RESAE_TEST_OUT}/sched_api_np${np} TIMEOUT 60)
endforeach()

# jobs/slurm/resae.sbatch outside Slurm (stand-ins for srun and scontrol): USR1 -> exit 3 -> requeue
resae_add_cmd(sched_sbatch_local COMMAND bash ${PROJECT_SOURCE_DIR}/tests/sched/sbatch_local.sh ${PROJECT_SOURCE_DIR}
  $<TARGET_FILE:test_sched> ${MPIEXEC_EXECUTABLE} ${RESAE_TEST_OUT}
  PASS_REGEX "SIGUSR1 -> exit 3 -> requeue -> complete" TIMEOUT 120 LABELS sched)
resae_add_cmd(sched_sbatch_syntax COMMAND bash -n ${PROJECT_SOURCE_DIR}/jobs/slurm/resae.sbatch LABELS sched)

# random graphs: world tasks, tasks that always fail, transitive skips
foreach(cfg "1;0;1" "2;1;2" "4;1;3" "4;2;4")
  list(GET cfg 0 np)
  list(GET cfg 1 gs)
  list(GET cfg 2 seed)
  resae_add_mpi(sched_random_gs${gs}_s${seed} TARGET test_sched RANKS ${np}
    ARGS random ${RESAE_TEST_OUT}/sched_random_np${np}_gs${gs}_s${seed} ${gs} --seed ${seed} TIMEOUT 60)
endforeach()

# critical-path priorities: one group of every rank runs the tasks in a known order
foreach(np 1 2)
  resae_add_mpi(sched_prio TARGET test_sched RANKS ${np} ARGS prio ${RESAE_TEST_OUT}/sched_prio_np${np} ${np} TIMEOUT 60)
endforeach()
