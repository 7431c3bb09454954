# Embedded demo (configs/demo): the committed token data must follow its construction rules and
# match the Python stdlib sources it was cut from (where they are unchanged), and the committed
# expected-CE fixture must belong to the committed checkpoint and tokens and be reproduced by the
# PyTorch reference forward. PASS_REGEX makes ctest ignore the exit code, hence the FAIL_REGEX.
set(RESAE_DEMO_PY /usr/bin/python3)
set(RESAE_DEMO_REF ${PROJECT_SOURCE_DIR}/tests/reference/demo)
resae_add_cmd(demo_tokens_consistent
  COMMAND ${RESAE_DEMO_PY} ${RESAE_DEMO_REF}/build_corpus.py --check --out ${PROJECT_SOURCE_DIR}/configs/demo
  PASS_REGEX "demo tokens consistent" FAIL_REGEX "MISMATCH|Traceback" LABELS demo)
resae_add_cmd(demo_expected_ce_consistent
  COMMAND ${RESAE_DEMO_PY} ${RESAE_DEMO_REF}/eval_demo_model.py --check
    --model ${PROJECT_SOURCE_DIR}/configs/demo/model --tokens ${PROJECT_SOURCE_DIR}/configs/demo/tokens.h5
    --fixture ${RESAE_TEST_DATA}/demo/expected_ce.h5
  PASS_REGEX "demo fixture consistent" FAIL_REGEX "MISMATCH|Traceback" TIMEOUT 120 LABELS demo)
