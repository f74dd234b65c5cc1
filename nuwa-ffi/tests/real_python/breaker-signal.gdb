# Run: see the b4 breaker report (NUWA_BREAKER=1, NUWA_RP_* env as the runner sets them).
set pagination off
set confirm off
handle SIGUSR2 nostop noprint pass
break nuwa_ffi::cpython::runs_python_here
run
break fopen
continue
echo \n=== at fopen inside nuwa's first pthread_getattr_np: delivering SIGUSR2 ===\n
bt 6
delete
signal SIGUSR2
echo \n=== after the signal (gdb interrupted by timeout) ===\n
bt 12
kill
