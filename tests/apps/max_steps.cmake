# Runs nordf-basic with --max-steps 3 on a tiny split: it must exit 0 with the "paused" line and
# leave run.json "paused" and 3 rows in steps.csv; --resume OUT --max-steps 0 then finishes the
# run (run.json "finished", an OOD table).
function(expect_status want)
  file(READ ${OUT_DIR}/run.json status)
  if(NOT status MATCHES "\"status\": \"${want}\"")
    message(FATAL_ERROR "run.json does not say ${want}:\n${status}")
  endif()
endfunction()

file(REMOVE_RECURSE ${OUT_DIR})
set(args --train-per-class 40 --val-per-class 10 --test-per-class 10 --ood-limit 20 --epochs 1 --batch-size 8
         --ood-methods msp nordf_sim)
execute_process(COMMAND ${EXE} ${args} --max-steps 3 --out ${OUT_DIR} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the paused run exited ${rc}: ${err}")
endif()
if(NOT out MATCHES "paused after 3 training steps \\(train.max_steps\\)")
  message(FATAL_ERROR "no 'paused' line in:\n${out}")
endif()
expect_status(paused)
file(STRINGS ${OUT_DIR}/steps.csv rows)
list(LENGTH rows n)
if(NOT n EQUAL 4)
  message(FATAL_ERROR "expected a header and 3 steps in steps.csv, got ${n} lines")
endif()
execute_process(COMMAND ${EXE} --resume ${OUT_DIR} --max-steps 0 RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT out MATCHES "ID test accuracy")
  message(FATAL_ERROR "the resumed run did not finish (exit ${rc}):\n${out}\n${err}")
endif()
expect_status(finished)
if(out MATCHES "classification loss is off")
  message(FATAL_ERROR "a trained classifier is called untrained:\n${out}")
endif()
# With the classification loss off, the ID accuracy line says so.
execute_process(COMMAND ${EXE} --resume ${OUT_DIR} --eval-only --lambda-cls 0 RESULT_VARIABLE rc OUTPUT_VARIABLE out
                ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT out MATCHES "ID test accuracy: [0-9.]+ \\([0-9]+ images, 5 classes\\); the classification loss is off \\(train.lambda_cls = 0\\)")
  message(FATAL_ERROR "no note that the classification loss is off (exit ${rc}):\n${out}\n${err}")
endif()
message("paused after 3 steps, then finished on --resume")
