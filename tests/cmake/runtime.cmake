# GPT-NeoX runtime: numerics against the PyTorch reference, hostile files, resae forward.
set(RESAE_RUNTIME_FIXTURES base seq_odd bf16_tied f16_sharded long_seq)

resae_add_unit(test_runtime_kernels SOURCES ${PROJECT_SOURCE_DIR}/tests/runtime/test_kernels.c LABELS runtime)
resae_add_unit(test_runtime_files SOURCES ${PROJECT_SOURCE_DIR}/tests/runtime/test_files.c LABELS runtime)

add_executable(test_runtime_forward ${PROJECT_SOURCE_DIR}/tests/runtime/test_forward.c)
target_link_libraries(test_runtime_forward PRIVATE resae_lib)
foreach(fx ${RESAE_RUNTIME_FIXTURES})
  add_test(NAME runtime_forward_${fx} COMMAND test_runtime_forward ${fx})
  set_tests_properties(runtime_forward_${fx} PROPERTIES ENVIRONMENT "${RESAE_TEST_ENV}" LABELS "serial;runtime")
endforeach()

# resae forward on every fixture, checked against the reference by a numpy script
set(RT_DATA ${RESAE_TEST_DATA}/runtime)
set(RT_CHECK "/usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/runtime/check_forward.py")
foreach(fx ${RESAE_RUNTIME_FIXTURES})
  set(seq_len 12)
  if(fx STREQUAL "long_seq")
    set(seq_len 160)
  endif()
  resae_add_cmd(runtime_cmd_${fx}_h5 LABELS runtime COMMAND sh -c
    "$<TARGET_FILE:resae> forward --model ${RT_DATA}/${fx} --tokens ${RT_DATA}/${fx}/tokens.h5 --out ${RESAE_TEST_OUT}/fwd_${fx}_h5.h5 --layers all --logits && ${RT_CHECK} ${RESAE_TEST_OUT}/fwd_${fx}_h5.h5 ${RT_DATA}/${fx}/expected.h5")
  resae_add_cmd(runtime_cmd_${fx}_bin LABELS runtime COMMAND sh -c
    "$<TARGET_FILE:resae> forward --model ${RT_DATA}/${fx} --tokens ${RT_DATA}/${fx}/tokens_u16.bin --seq-len ${seq_len} --batch 2 --layers 0,-1 --out ${RESAE_TEST_OUT}/fwd_${fx}_bin.h5 && ${RT_CHECK} ${RESAE_TEST_OUT}/fwd_${fx}_bin.h5 ${RT_DATA}/${fx}/expected.h5")
endforeach()
resae_add_cmd(runtime_cmd_u32_maxseqs LABELS runtime COMMAND sh -c
  "$<TARGET_FILE:resae> forward --model ${RT_DATA}/seq_odd --tokens ${RT_DATA}/seq_odd/tokens_u32.bin --format bin_u32 --seq-len 12 --max-seqs 2 --layers 2 --out ${RESAE_TEST_OUT}/fwd_u32.h5 && ${RT_CHECK} ${RESAE_TEST_OUT}/fwd_u32.h5 ${RT_DATA}/seq_odd/expected.h5 --n-seq 2")
# ranks split the sequences and write one file
foreach(np 1 2 4)
  add_test(NAME runtime_cmd_mpi_np${np} COMMAND sh -c
    "${MPIEXEC_EXECUTABLE} --oversubscribe --bind-to none --mca btl self,vader -n ${np} $<TARGET_FILE:resae> forward --model ${RT_DATA}/base --tokens ${RT_DATA}/base/tokens.h5 --batch 1 --layers all --logits --out ${RESAE_TEST_OUT}/fwd_mpi${np}.h5 && ${RT_CHECK} ${RESAE_TEST_OUT}/fwd_mpi${np}.h5 ${RT_DATA}/base/expected.h5")
  set_tests_properties(runtime_cmd_mpi_np${np} PROPERTIES ENVIRONMENT "${RESAE_TEST_ENV}" PROCESSORS ${np}
    LABELS "mpi;runtime")
endforeach()
# usage and input errors: clear messages, non-zero exit
resae_add_cmd(runtime_cmd_help LABELS runtime COMMAND $<TARGET_FILE:resae> forward --help PASS_REGEX "--max-seqs")
resae_add_cmd(runtime_cmd_usage LABELS runtime COMMAND $<TARGET_FILE:resae> forward --model ${RT_DATA}/base WILL_FAIL)
resae_add_cmd(runtime_cmd_bad_layer LABELS runtime COMMAND $<TARGET_FILE:resae> forward --model ${RT_DATA}/base
  --tokens ${RT_DATA}/base/tokens.h5 --out ${RESAE_TEST_OUT}/fwd_bad.h5 --layers 0,7 PASS_REGEX "layer 7 is outside -1..1")
resae_add_cmd(runtime_cmd_vocab LABELS runtime COMMAND $<TARGET_FILE:resae> forward --model ${RT_DATA}/bf16_tied
  --tokens ${RT_DATA}/base/tokens.h5 --out ${RESAE_TEST_OUT}/fwd_bad.h5
  PASS_REGEX "base/tokens.h5: token id [0-9]+ at sequence 0, position 1 is outside \\[0, 64\\)")
resae_add_cmd(runtime_cmd_bin_needs_len LABELS runtime COMMAND $<TARGET_FILE:resae> forward --model ${RT_DATA}/base
  --tokens ${RT_DATA}/base/tokens_u16.bin --out ${RESAE_TEST_OUT}/fwd_bad.h5 PASS_REGEX "needs a sequence length")
resae_add_cmd(runtime_cmd_bad_out LABELS runtime COMMAND $<TARGET_FILE:resae> forward --model ${RT_DATA}/base
  --tokens ${RT_DATA}/base/tokens.h5 --out /nonexistent_dir/out.h5 PASS_REGEX "/nonexistent_dir/out.h5: cannot create")
resae_add_cmd(runtime_cmd_bad_model LABELS runtime COMMAND $<TARGET_FILE:resae> forward --model ${RT_DATA}
  --tokens ${RT_DATA}/base/tokens.h5 --out ${RESAE_TEST_OUT}/fwd_bad.h5 PASS_REGEX "runtime/config.json: cannot open")
