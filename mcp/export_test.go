package mcp

// ResourceMetadata exposes resourceMetadata to the tests.
var ResourceMetadata = resourceMetadata
