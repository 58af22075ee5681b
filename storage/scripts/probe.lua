#!lua flags=no-writes
-- Loaded once when the store connects (lua.check_shebang). A server older than Redis/Valkey 7.0 does
-- not know shebangs and refuses this, as it would refuse every write script (they all start with
-- one): so the server says so at start, in one line, instead of answering 500 to every write.
return 1
