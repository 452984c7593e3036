# --resume on directories without a run to resume: one that holds only the run.json of a run that
# failed before it started, one that holds nothing of libnordf's, and one that does not exist.
# Each gets one line that says so. -DEXE=<nordf-basic> -DWORK=<scratch directory>
file(REMOVE_RECURSE ${WORK})
file(WRITE ${WORK}/failed/run.json "{\"status\": \"failed\", \"seconds\": 0.5, \"error\": \"train.batch_size = 64 is too large\"}\n")
file(WRITE ${WORK}/stopped/run.json "{\"status\": \"running\", \"seconds\": 0.5}\n")
file(MAKE_DIRECTORY ${WORK}/other)
function(expect_resume_error dir expect)
  execute_process(COMMAND ${EXE} --resume ${WORK}/${dir} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  string(STRIP "${err}" err)
  message("${dir}: exit ${rc}; stderr: ${err}")
  if(rc EQUAL 0 OR NOT err MATCHES "^nordf-basic: error: ${expect}$")
    message(FATAL_ERROR "expected one line matching '${expect}'")
  endif()
endfunction()
expect_resume_error(failed "--resume ${WORK}/failed: the run failed before it started training \\(no config.json. its error: train.batch_size = 64 is too large\\). start it again with --out ${WORK}/failed")
expect_resume_error(stopped "--resume ${WORK}/stopped: the run has not started training \\(run.json: running. no config.json\\): it was stopped while loading its data, or is loading it now. start it again with --out ${WORK}/stopped")
expect_resume_error(other "--resume ${WORK}/other: the directory holds no run \\(no config.json\\)")
expect_resume_error(missing "--resume: Directory does not exist: ${WORK}/missing \\(see --help\\)")
