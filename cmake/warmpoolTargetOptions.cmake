# Warnings and sanitizers for warmpool's own tests and examples. Never applied to the INTERFACE
# targets: a consumer's flags are the consumer's business.

function(warmpool_target_options target)
    if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
        target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic)
        if(WARMPOOL_WERROR)
            target_compile_options(${target} PRIVATE -Werror)
        endif()
    elseif(MSVC)
        target_compile_options(${target} PRIVATE /W4 /permissive-)
        if(WARMPOOL_WERROR)
            target_compile_options(${target} PRIVATE /WX)
        endif()
    endif()

    if(WARMPOOL_SANITIZE)
        set(_flags -fsanitize=${WARMPOOL_SANITIZE} -fno-omit-frame-pointer)
        if(WARMPOOL_SANITIZE MATCHES "undefined")
            # A report must fail the test, not scroll past.
            list(APPEND _flags -fno-sanitize-recover=undefined)
            # The vptr check references the typeinfo of every polymorphic class it sees, and
            # SOCI's shared libraries do not export their backends' typeinfo: the link fails.
            list(APPEND _flags -fno-sanitize=vptr)
        endif()
        target_compile_options(${target} PRIVATE ${_flags})
        target_link_options(${target} PRIVATE ${_flags})
    endif()
endfunction()
