-- This file starts with a UTF-8 byte-order mark (issue 15 part 6): it must load.
test("a file with a BOM loads", function(t) t:assert_eq(1 + 1, 2) end)
