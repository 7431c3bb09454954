# GPT-NeoX runtime: numerics against the PyTorch reference, hostile files, resae forward.
set(RESAE_RUNTIME_FIXTURES base seq_odd bf16_tied f16_sharded)

#resae_add_unit(test_runtime_kernels SOURCES ${PROJECT_SOURCE_DIR}/tests/runtime/test_kernels.c)
#resae_add_unit(test_runtime_files SOURCES ${PROJECT_SOURCE_DIR}/tests/runtime/test_files.c)

add_executable(test_runtime_forward ${PROJECT_SOURCE_DIR}/tests/runtime/test_forward.c)
target_link_libraries(test_runtime_forward PRIVATE resae_core)
foreach(fx ${RESAE_RUNTIME_FIXTURES})
  add_test(NAME runtime_forward_${fx} COMMAND test_runtime_forward ${fx})
  set_tests_properties(runtime_forward_${fx} PROPERTIES ENVIRONMENT "${RESAE_TEST_ENV}" LABELS "serial;runtime")
endforeach()
