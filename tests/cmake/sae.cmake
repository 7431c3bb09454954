# TopK SAE (docs/sae.md): gradients, learning, data-parallel agreement, checkpoints, resume after
# SIGKILL, PyTorch reference; and the benchmark program (tests/bench/sae_bench.sh, not a test).
resae_add_unit(test_sae_grad SOURCES ${PROJECT_SOURCE_DIR}/tests/sae/test_sae_grad.c LABELS sae)
resae_add_unit(test_sae_learn SOURCES ${PROJECT_SOURCE_DIR}/tests/sae/test_sae_learn.c LABELS sae)
resae_add_unit(test_sae_ckpt SOURCES ${PROJECT_SOURCE_DIR}/tests/sae/test_sae_ckpt.c LABELS sae)
resae_add_unit(test_sae_torch SOURCES ${PROJECT_SOURCE_DIR}/tests/sae/test_sae_torch.c LABELS sae)
resae_add_unit(test_sae_blocks SOURCES ${PROJECT_SOURCE_DIR}/tests/sae/test_sae_blocks.c LABELS sae)

foreach(prog test_sae_ranks sae_resume_driver)
  add_executable(${prog} ${PROJECT_SOURCE_DIR}/tests/sae/${prog}.c)
  target_include_directories(${prog} PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  target_link_libraries(${prog} PRIVATE resae_lib)
endforeach()
resae_add_mpi(sae_ranks TARGET test_sae_ranks RANKS 1 2 4 LABELS sae)
foreach(np 1 2)
  resae_add_cmd(sae_resume_kill_np${np}
    COMMAND ${PROJECT_SOURCE_DIR}/tests/sae/resume_kill.sh $<TARGET_FILE:sae_resume_driver> ${np} ${RESAE_TEST_OUT}
      ${RESAE_MPIEXEC}
    LABELS sae TIMEOUT 120)
endforeach()

# Under ASan, Open MPI's own allocations (kept until exit, in unloaded MCA components whose frames
# LeakSanitizer cannot name, so no suppression matches) are reported as leaks. The MPI programs run
# with leak detection off; every trainer code path is leak-checked by the serial tests above.
if(RESAE_SANITIZE)
  foreach(t sae_ranks_np1 sae_ranks_np2 sae_ranks_np4 sae_resume_kill_np1 sae_resume_kill_np2)
    set_property(TEST ${t} APPEND PROPERTY ENVIRONMENT "ASAN_OPTIONS=detect_leaks=0:abort_on_error=0")
  endforeach()
endif()

add_executable(sae_bench ${PROJECT_SOURCE_DIR}/tests/bench/sae_bench.c)
target_include_directories(sae_bench PRIVATE ${PROJECT_SOURCE_DIR}/tests)
target_link_libraries(sae_bench PRIVATE resae_lib)
