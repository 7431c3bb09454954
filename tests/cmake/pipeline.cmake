# resae run end to end on the small fixture experiment.
set(RESAE_PIPE ${PROJECT_SOURCE_DIR}/tests/pipeline/run_small.sh $<TARGET_FILE:resae> ${MPIEXEC_EXECUTABLE}
  ${RESAE_TEST_OUT} ${PROJECT_SOURCE_DIR})
foreach(np 1 2 4)
  resae_add_cmd(pipeline_np${np} COMMAND bash ${RESAE_PIPE} ranks ${np}
    PASS_REGEX "pipeline at ${np} ranks: ok" TIMEOUT 600 LABELS pipeline)
endforeach()
resae_add_cmd(pipeline_kill_restart COMMAND bash ${RESAE_PIPE} kill
  PASS_REGEX "results identical to the uninterrupted run" TIMEOUT 900 LABELS pipeline)
resae_add_cmd(pipeline_sigterm COMMAND bash ${RESAE_PIPE} term
  PASS_REGEX "SIGTERM: exit 3, resumed, results identical" TIMEOUT 600 LABELS pipeline)
resae_add_cmd(pipeline_harvest_ranks COMMAND bash ${RESAE_PIPE} harvest
  PASS_REGEX "identical and equal to resae forward" TIMEOUT 600 LABELS pipeline)
# tasks scheduled over worker groups (tests/pipeline/run_small.sh groups N GS)
resae_add_cmd(pipeline_groups_np4_gs2 COMMAND bash ${RESAE_PIPE} groups 4 2
  PASS_REGEX "groups of 2 at 4 ranks: tasks on every group" TIMEOUT 600 LABELS pipeline)
resae_add_cmd(pipeline_groups_np2_gs1 COMMAND bash ${RESAE_PIPE} groups 2 1
  PASS_REGEX "groups of 1 at 2 ranks: tasks on every group" TIMEOUT 600 LABELS pipeline)
# 10 SIGKILLs at random moments on a 105-task grid (tests/pipeline/kill_grid.sh; the same script
# kills the demo grid: tests/pipeline/kill_grid.sh build/resae configs/demo.yaml 10 2 OUT)
resae_add_cmd(pipeline_kill_grid COMMAND bash ${RESAE_PIPE} killgrid
  PASS_REGEX "killed 10 times \\(SIGKILL\\) and restarted: results identical" TIMEOUT 900 LABELS pipeline)
resae_add_cmd(pipeline_changed_config COMMAND bash ${RESAE_PIPE} changed
  PASS_REGEX "changed config: only new tasks ran" TIMEOUT 600 LABELS pipeline)
# --until takes the names of enum rs_stage (src/run/stage.c)
resae_add_cmd(pipeline_until_unknown COMMAND $<TARGET_FILE:resae> run --until bogus config.yaml
  PASS_REGEX "unknown stage 'bogus' for --until \\(harvest, affine, train, evaluate\\)" LABELS pipeline)
