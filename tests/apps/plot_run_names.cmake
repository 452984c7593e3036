# nordf-plot --run on a finished run whose OOD set name holds a comma, a quote and a line break
# or a '#' (set names come from folder names): ood/scores.csv quotes it over two lines, and the plots
# read it back as one record. -DEXE=<nordf-plot> -DRUN_DIR=<scratch directory>
file(REMOVE_RECURSE ${RUN_DIR})
file(WRITE ${RUN_DIR}/run.json "{\"status\": \"finished\", \"seconds\": 1.0}\n")
file(WRITE ${RUN_DIR}/history.json "[]\n")
file(WRITE ${RUN_DIR}/ood/metrics.json
     "{\"sets\": [{\"name\": \"id_test\", \"role\": \"id\"}, {\"name\": \"two\\nlines, \\\"q\\\" #1\", \"role\": \"near\"}]}\n")
set(csv "method,split,index,is_ood,score\n")
foreach(i 0 1 2 3)
  math(EXPR s "${i} + 4")
  string(APPEND csv "msp,id_test,${i},0,0.${s}\n")
  string(APPEND csv "msp,\"two\nlines, \"\"q\"\" #1\",${i},1,0.${i}\n")
endforeach()
file(WRITE ${RUN_DIR}/ood/scores.csv "${csv}")
execute_process(COMMAND ${EXE} --run ${RUN_DIR} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("exit ${rc}: ${out}${err}")
if(NOT rc EQUAL 0 OR NOT out MATCHES "plots: 3 files")
  message(FATAL_ERROR "nordf-plot --run did not plot the run")
endif()
# The ROC plot's file name has the line break replaced.
foreach(f "roc-two_lines, \"q\" #1.png" "roc-two_lines, \"q\" #1.svg" scores-msp.png)
  if(NOT EXISTS "${RUN_DIR}/plots/${f}")
    message(FATAL_ERROR "no plots/${f}")
  endif()
endforeach()
