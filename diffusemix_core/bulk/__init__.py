"""The bulk run: plan -> load -> generate -> compose (-> score) -> commit; the local threaded runner, the Ray
runner, CPU sharing."""
