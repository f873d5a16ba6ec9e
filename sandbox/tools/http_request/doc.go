// Command http_request is the built-in Talon tool for JSON API calls: any
// method, headers, a JSON body and, optionally, a credential from the
// calling user's vault that the host injects. It is compiled to
// http_request.wasm and runs only inside the Talon sandbox. Because it can
// send data anywhere it is allowed to, its default manifest
// (../http_request.yaml) disables it until the operator grants hosts.
package main
