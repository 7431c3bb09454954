# Token splits, activation store and harvest driver.
set(RESAE_STORE_TESTS ${PROJECT_SOURCE_DIR}/tests/store)

resae_add_unit(test_store_unit SOURCES ${RESAE_STORE_TESTS}/test_store_unit.c)

add_executable(test_harvest_driver ${RESAE_STORE_TESTS}/test_harvest_driver.c)
target_include_directories(test_harvest_driver PRIVATE ${PROJECT_SOURCE_DIR}/tests)
target_link_libraries(test_harvest_driver PRIVATE resae_lib)

add_executable(test_store_mpi ${RESAE_STORE_TESTS}/test_store_mpi.c)
target_include_directories(test_store_mpi PRIVATE ${PROJECT_SOURCE_DIR}/tests)
target_link_libraries(test_store_mpi PRIVATE resae_lib)
resae_add_mpi(store_mpi TARGET test_store_mpi RANKS 1 2 4 TIMEOUT 120)

resae_add_cmd(store_cross_ranks
  COMMAND bash ${RESAE_STORE_TESTS}/cross_ranks.sh $<TARGET_FILE:test_harvest_driver> ${MPIEXEC_EXECUTABLE}
          ${RESAE_TEST_OUT} ${PROJECT_SOURCE_DIR}
  PASS_REGEX "cross-rank stores identical: ok" TIMEOUT 120)
resae_add_cmd(store_kill_restart
  COMMAND bash ${RESAE_STORE_TESTS}/kill_restart.sh $<TARGET_FILE:test_harvest_driver> ${MPIEXEC_EXECUTABLE}
          ${RESAE_TEST_OUT} ${PROJECT_SOURCE_DIR}
  PASS_REGEX "identical to the uninterrupted one: ok" TIMEOUT 120)
# a NaN produced by the model is an error naming where it came from; nothing is stored silently
resae_add_cmd(store_nan_refused
  COMMAND ${MPIEXEC_EXECUTABLE} --oversubscribe --bind-to none --mca btl self,vader -n 2
          $<TARGET_FILE:test_harvest_driver> ${RESAE_TEST_OUT}/store_nan --force --nan 5,3,1
  PASS_REGEX "non-finite value nan produced for split [a-z]+, layer 1, sequence 5 \\(batch [0-9]+\\), position 3")
