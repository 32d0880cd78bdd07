# Compiles SOURCE with CXX_COMPILER and INCLUDE_DIR and passes only if the compiler rejects it
# with EXPECTED in its diagnostics: a compile-time promise of the library, tested.
execute_process(
    COMMAND "${CXX_COMPILER}" -std=c++17 -fsyntax-only "-I${INCLUDE_DIR}" "${SOURCE}"
    RESULT_VARIABLE result
    OUTPUT_VARIABLE output
    ERROR_VARIABLE output)
if(result EQUAL 0)
    message(FATAL_ERROR "${SOURCE} compiled, but must be rejected")
endif()
string(FIND "${output}" "${EXPECTED}" at)
if(at EQUAL -1)
    message(FATAL_ERROR "${SOURCE} was rejected, but without \"${EXPECTED}\":\n${output}")
endif()
message(STATUS "rejected as expected: ${EXPECTED}")
