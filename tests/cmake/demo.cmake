# Embedded demo (configs/demo): the committed token data must follow its construction rules and
# match the Python stdlib sources it was cut from (where they are unchanged), and the committed
# expected-CE fixture must belong to the committed checkpoint and tokens and be reproduced by the
# PyTorch reference forward. PASS_REGEX makes ctest ignore the exit code, hence the FAIL_REGEX.
set(RESAE_DEMO_PY /usr/bin/python3)
set(RESAE_DEMO_REF ${PROJECT_SOURCE_DIR}/tests/reference/demo)
resae_add_cmd(demo_tokens_consistent
  COMMAND ${RESAE_DEMO_PY} ${RESAE_DEMO_REF}/build_corpus.py --check --out ${PROJECT_SOURCE_DIR}/configs/demo
  PASS_REGEX "demo tokens consistent" FAIL_REGEX "MISMATCH|Traceback" LABELS demo)
# resae forward on the demo checkpoint reproduces the PyTorch CE of the fixture (first 16 windows;
# the mean over all 4992 windows is checked by hand with --full, see configs/demo/README.md).
# The PyTorch side (eval_demo_model.py --check) needs python3-torch, which the test suite does not
# install; it is run by hand.
resae_add_cmd(demo_forward_ce
  COMMAND bash -c "$<TARGET_FILE:resae> forward --model ${PROJECT_SOURCE_DIR}/configs/demo/model --tokens ${PROJECT_SOURCE_DIR}/configs/demo/tokens.h5 --out ${RESAE_TEST_OUT}/demo_forward.h5 --max-seqs 16 && /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/demo/check_forward_ce.py ${RESAE_TEST_OUT}/demo_forward.h5 ${RESAE_TEST_DATA}/demo/expected_ce.h5"
  PASS_REGEX "demo forward CE: ok" FAIL_REGEX "FAIL|Traceback" TIMEOUT 120 LABELS demo)
resae_add_cmd(demo_config_validates COMMAND $<TARGET_FILE:resae> validate -q ${PROJECT_SOURCE_DIR}/configs/demo.yaml
  LABELS demo)
