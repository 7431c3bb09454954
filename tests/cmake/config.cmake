# Experiment configuration: schema errors with FILE:LINE:COL, good configs, round trip, the demo
# config, the grid, and the `resae validate` command line.
set(RESAE_CONFIG_DATA ${RESAE_TEST_DATA}/config)
set(RESAE_CONFIG_TESTS ${PROJECT_SOURCE_DIR}/tests/config)

# every bad/NAME.yaml must fail with exit 1 and the messages in bad/NAME.expect
file(GLOB RESAE_BAD_CONFIGS CONFIGURE_DEPENDS ${RESAE_CONFIG_DATA}/bad/*.yaml)
foreach(cfg ${RESAE_BAD_CONFIGS})
  get_filename_component(name ${cfg} NAME_WE)
  resae_add_cmd(config_bad_${name} LABELS config
    COMMAND bash ${RESAE_CONFIG_TESTS}/check_validate.sh $<TARGET_FILE:resae> ${cfg} 1
            ${RESAE_CONFIG_DATA}/bad/${name}.expect)
endforeach()

# every good/NAME.yaml validates, and its resolved form validates to itself
file(GLOB RESAE_GOOD_CONFIGS CONFIGURE_DEPENDS ${RESAE_CONFIG_DATA}/good/*.yaml)
foreach(cfg ${RESAE_GOOD_CONFIGS})
  get_filename_component(name ${cfg} NAME_WE)
  resae_add_cmd(config_roundtrip_${name} LABELS config
    COMMAND bash ${RESAE_CONFIG_TESTS}/roundtrip.sh $<TARGET_FILE:resae> ${cfg} ${RESAE_TEST_OUT}/config)
endforeach()

resae_add_cmd(config_demo LABELS config
  COMMAND bash ${RESAE_CONFIG_TESTS}/demo.sh $<TARGET_FILE:resae> ${PROJECT_SOURCE_DIR}
          ${RESAE_CONFIG_DATA}/model ${RESAE_TEST_OUT}/config/demo)

# command line
resae_add_cmd(validate_help LABELS config COMMAND $<TARGET_FILE:resae> validate --help
  PASS_REGEX "usage: resae validate.*exit codes: 0 valid, 1 invalid")
set(RESAE_EXPECT_EXIT bash ${RESAE_CONFIG_TESTS}/expect_exit.sh)
set(RESAE_DEMO_LIKE ${RESAE_CONFIG_DATA}/good/demo_like.yaml)
resae_add_cmd(validate_no_args LABELS config
  COMMAND ${RESAE_EXPECT_EXIT} 2 "usage: resae validate" $<TARGET_FILE:resae> validate)
resae_add_cmd(validate_bad_option LABELS config
  COMMAND ${RESAE_EXPECT_EXIT} 2 "unknown option '--frob'" $<TARGET_FILE:resae> validate --frob ${RESAE_DEMO_LIKE})
resae_add_cmd(validate_two_configs LABELS config
  COMMAND ${RESAE_EXPECT_EXIT} 2 "one CONFIG only" $<TARGET_FILE:resae> validate ${RESAE_DEMO_LIKE} ${RESAE_DEMO_LIKE})
resae_add_cmd(validate_missing_file LABELS config
  COMMAND ${RESAE_EXPECT_EXIT} 1 "error: cannot read the config: /nonexistent/x.yaml: cannot open"
          $<TARGET_FILE:resae> validate /nonexistent/x.yaml)
resae_add_cmd(validate_quiet LABELS config
  COMMAND env WANT_EMPTY_STDOUT=1 ${RESAE_EXPECT_EXIT} 0 - $<TARGET_FILE:resae> validate -q ${RESAE_DEMO_LIKE})
resae_add_cmd(validate_help_dispatch LABELS config
  COMMAND ${RESAE_EXPECT_EXIT} 0 "exit codes: 0 valid, 1 invalid" $<TARGET_FILE:resae> help validate)

# unit tests: parsing API, defaults, hashing, hostile input; grid sharing counts
resae_add_unit(test_config SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/test_config.c LABELS config)
resae_add_unit(test_grid SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/test_grid.c LABELS config)
# the schema tables: hash membership of every field, table sanity, docs/config.md's key reference
resae_add_unit(test_config_table SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/test_config_table.c
  ARGS ${PROJECT_SOURCE_DIR}/docs/config.md LABELS config)
