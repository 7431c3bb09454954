# Token splits, activation store and harvest driver.
set(RESAE_STORE_TESTS ${PROJECT_SOURCE_DIR}/tests/store)

resae_add_unit(test_store_unit SOURCES ${RESAE_STORE_TESTS}/test_store_unit.c)

add_executable(test_harvest_driver ${RESAE_STORE_TESTS}/test_harvest_driver.c)
target_include_directories(test_harvest_driver PRIVATE ${PROJECT_SOURCE_DIR}/tests)
target_link_libraries(test_harvest_driver PRIVATE resae_core)

add_executable(test_store_mpi ${RESAE_STORE_TESTS}/test_store_mpi.c)
target_include_directories(test_store_mpi PRIVATE ${PROJECT_SOURCE_DIR}/tests)
target_link_libraries(test_store_mpi PRIVATE resae_core)
resae_add_mpi(store_mpi TARGET test_store_mpi RANKS 1 2 4 TIMEOUT 120)
