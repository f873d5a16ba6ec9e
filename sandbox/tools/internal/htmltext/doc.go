// Package htmltext turns an HTML document into its title and readable text,
// for the built-in tools http_fetch and html_text. It only computes: no I/O.
package htmltext
