# TopK SAE: gradients, learning, data-parallel agreement, resume after SIGKILL, PyTorch reference.
resae_add_unit(test_sae_grad SOURCES ${PROJECT_SOURCE_DIR}/tests/sae/test_sae_grad.c LABELS sae)
