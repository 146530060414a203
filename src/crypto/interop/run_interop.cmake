# Runs the interop tests: installs the npm packages of package-lock.json into the build
# directory (never into the source tree), then runs interop.mjs against the driver.
# Fails (never skips) when node or npm is missing or the install fails. --prefer-offline: a
# second build folder (the CI's sanitizer build) installs from npm's cache instead of asking
# the registry again (one such install took 255 s where the first took seconds).
# Inputs: SRC (this folder), WORK (a build folder), DRIVER (the interop_driver binary).
find_program(NODE node)
find_program(NPM npm)
if(NOT NODE OR NOT NPM)
  message(FATAL_ERROR "node and npm are required for the interop tests (scripts/setup.sh installs them)")
endif()
file(MAKE_DIRECTORY ${WORK})
file(COPY ${SRC}/package.json ${SRC}/package-lock.json ${SRC}/interop.mjs DESTINATION ${WORK})
if(NOT EXISTS ${WORK}/node_modules/@signalapp/libsignal-client/package.json
   OR ${SRC}/package-lock.json IS_NEWER_THAN ${WORK}/node_modules/.tern-installed)
  execute_process(COMMAND ${NPM} ci --prefer-offline --no-audit --no-fund WORKING_DIRECTORY ${WORK} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "npm ci failed (${rc})")
  endif()
  file(TOUCH ${WORK}/node_modules/.tern-installed)
endif()
execute_process(COMMAND ${NODE} interop.mjs ${DRIVER} WORKING_DIRECTORY ${WORK} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "interop.mjs failed (${rc})")
endif()
