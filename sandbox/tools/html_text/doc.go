// Command html_text is the built-in Talon tool that turns HTML the model
// already has (pasted by the user, or returned by another tool) into its
// title and readable text. It needs no network. It is compiled to
// html_text.wasm and runs inside the Talon sandbox; built natively, it
// serves one call on stdin and stdout (the sandbox benchmark compares both).
package main
