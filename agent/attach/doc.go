// Package attach reads the files people attach to messages into what a
// model can take: text (plain text, source code, CSV, JSON, logs, PDF),
// kept within a budget with its head and tail, and images, checked for
// their dimensions before they are decoded and scaled down to a limit.
//
// It only computes: it never downloads, stores or logs, and it treats every
// input as hostile (a lying extension, a decompression bomb, a malformed
// PDF, invalid UTF-8). It imports no other package of Talon's.
package attach
