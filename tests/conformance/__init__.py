"""Protocol-conformance suite: Autobahn|Testsuite's case categories as raw-socket tests."""
