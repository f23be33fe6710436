WORKLOAD_BEGIN conformance
    WORKLOAD_ENTRY conformance
    EXIT 0
    ROUTINES conformance
WORKLOAD_END conformance
