# The tree's layering: includes go down the layer order, no include cycles between modules.
resae_add_cmd(tree_layers LABELS tree COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/tree/check_layers.py
  ${PROJECT_SOURCE_DIR} PASS_REGEX " 0 violation\\(s\\)")
