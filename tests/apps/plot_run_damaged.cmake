# nordf-plot --run on a run directory with one damaged file at a time: each is one error naming
# the file (and the record), exit 1, and no plot is written. -DEXE=<nordf-plot> -DWORK=<scratch>
function(good_run dir)
  file(REMOVE_RECURSE ${dir})
  file(WRITE ${dir}/run.json "{\"status\": \"finished\", \"seconds\": 1.0}\n")
  file(WRITE ${dir}/history.json "[{\"epoch\": 1, \"grl_weight\": 0.1, \"lr\": 0.001, \"seconds\": 1.0,
    \"train\": {\"loss\": 2.0, \"sim_loss\": 0.7, \"cls_loss\": 1.0, \"rec_loss\": 0.3, \"cls_accuracy\": 0.5, \"sim_accuracy\": 0.5},
    \"val\": {\"loss\": 2.1, \"sim_loss\": 0.7, \"cls_loss\": 1.1, \"rec_loss\": 0.3, \"cls_accuracy\": 0.4, \"sim_accuracy\": 0.5}}]\n")
  file(WRITE ${dir}/ood/metrics.json "{\"sets\": [{\"name\": \"id_test\", \"role\": \"id\", \"size\": 3},
    {\"name\": \"near\", \"role\": \"near\", \"size\": 2}]}\n")
  file(WRITE ${dir}/ood/scores.csv "method,split,index,is_ood,score
msp,id_test,0,0,0.9
msp,id_test,1,0,0.8
msp,id_test,2,0,0.7
msp,near,0,1,0.6
msp,near,1,1,0.75
")
endfunction()

# The undamaged run plots.
good_run(${WORK}/good)
execute_process(COMMAND ${EXE} --run ${WORK}/good RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the undamaged run did not plot: ${out}${err}")
endif()

set(case 0)
# damage(<file> <contents> <expected error regex>)
function(damage file contents expect)
  math(EXPR n "${case} + 1")
  set(case ${n} PARENT_SCOPE)
  set(dir ${WORK}/damaged-${n})
  good_run(${dir})
  file(WRITE ${dir}/${file} "${contents}")
  execute_process(COMMAND ${EXE} --run ${dir} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message("${file}: exit ${rc}: ${err}")
  if(NOT rc EQUAL 1 OR NOT err MATCHES "${expect}")
    message(FATAL_ERROR "${file} (${contents}): expected exit 1 and '${expect}', got exit ${rc}: ${out}${err}")
  endif()
  string(REGEX MATCHALL "\n" lines "${err}")
  list(LENGTH lines count)
  if(NOT count EQUAL 1)
    message(FATAL_ERROR "${file}: expected one line on stderr, got: ${err}")
  endif()
  if(EXISTS ${dir}/plots)
    message(FATAL_ERROR "${file}: plots were written before the error")
  endif()
endfunction()

set(header "method,split,index,is_ood,score\n")
damage(ood/scores.csv "${header}msp,id_test,0,0,0.9\nmsp,id_test,1,0,0.8\nmsp,id_test,2,0,0.7\n"
       "scores.csv': 'msp' has 0 scores on 'near', whose 2 images .*metrics.json lists")
damage(ood/scores.csv "" "scores.csv' is not a scores file")
damage(ood/scores.csv "msp,id_test,0,0,0.9\n" "scores.csv' is not a scores file")
damage(ood/scores.csv "${header}" "scores.csv' holds no scores")
damage(ood/scores.csv "${header}msp,id_test,0,2,0.9\n" "scores.csv': record 2: is_ood is '2', not 0")
damage(ood/scores.csv "${header}msp,id_test,0,0,0.9\nmsp,id_test,0,0,0.9\n" "scores.csv': record 3: image index '0' where 1 comes next")
damage(ood/scores.csv "${header}msp,elsewhere,0,1,0.9\n" "scores.csv': record 2: the set 'elsewhere' is not one of the sets")
damage(ood/scores.csv "${header}msp,id_test,0,0,nan\n" "scores.csv': record 2: the score of 'msp' is not finite")
damage(ood/scores.csv "${header}msp,id_test,0,0,0.9x\n" "scores.csv': record 2: the score '0.9x' is not a number")
damage(history.json "{}" "history.json' is corrupt: expected an array of epochs")
damage(history.json "[{\"epoch\": 1, \"grl_weight\": 0.1, \"train\": {\"loss\": \"x\"}}]" "history.json' is corrupt: .*type must be number")
damage(history.json "[{\"epoch\": 1}]" "history.json' is corrupt: .*key 'train' not found")
damage(ood/metrics.json "{}" "metrics.json' is corrupt: .*key 'sets' not found")
damage(ood/metrics.json "{\"sets\": [{\"name\": \"near\", \"role\": \"near\", \"size\": 2}]}" "metrics.json' is corrupt: it lists no 'id_test' set")
damage(ood/metrics.json "{\"sets\": [{\"name\": \"id_test\", \"role\": \"id\", \"size\": 3}, {\"name\": \"near\", \"role\": \"odd\"}]}"
       "metrics.json' is corrupt: set 'near' has the role 'odd'")
