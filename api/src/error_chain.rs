//! Errors with their causes, for people: one line, or one entry per cause
//! (the REST API's error bodies are the JSON array of the chain).

/// The error and each of its sources, outermost first.
pub fn error_chain(e: &dyn std::error::Error) -> Vec<String> {
    let mut chain = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        chain.push(s.to_string());
        source = s.source();
    }
    chain
}

/// The chain on one line, causes separated by ": ".
pub fn error_line(e: &dyn std::error::Error) -> String {
    error_chain(e).join(": ")
}
