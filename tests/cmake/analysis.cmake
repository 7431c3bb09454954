# The results reader analysis/resae_store.py (results layouts 1 and 2, enum names from the file, errors
# naming the missing attribute) and report.py, store_info.py, compare_results.py on top of it, on tiny
# synthetic files written by the test (tests/analysis/test_resae_store.py).
resae_add_cmd(analysis_resae_store LABELS analysis
  COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/analysis/test_resae_store.py ${PROJECT_SOURCE_DIR}
  PASS_REGEX "resae_store: [0-9]+ checks ok" TIMEOUT 120)
