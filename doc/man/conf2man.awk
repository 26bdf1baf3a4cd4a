# SPDX-License-Identifier: GPL-2.0-or-later
# Turn an annotated example configuration (comment lines, then `key = value`, possibly
# commented out) into the man(7) body of its section 5 page: one .SS per [section], one
# .TP per key with the comments above it. The example file stays the one source.
function flush_text() { text = "" }
function esc(s) {
    gsub(/\\/, "\\e", s)
    sub(/^[.']/, "\\\\\\&&", s)
    return s
}
BEGIN { text = ""; started = 0 }
/^\[/ {
    name = $0; gsub(/[\[\]]/, "", name)
    sub(/^vm .*/, "vm NAME", name)
    print ".SS [" name "]"
    if (text != "") print esc(text)
    flush_text(); started = 1; next
}
!started { next }
/^#? *[a-z_]+ = / || /^#?[a-z_]+ =$/ {
    line = $0; sub(/^# */, "", line)
    key = line; sub(/ *=.*/, "", key)
    value = line; sub(/^[a-z_]+ *= */, "", value)
    print ".TP"
    print "\\fB" key "\\fR = \\fI" esc(value) "\\fR"
    if (text != "") print esc(text)
    flush_text(); next
}
/^# ?-+ .* -+$/ { next }
/^#/ {
    line = $0; sub(/^# ?/, "", line)
    if (line == "") { if (text != "") text = text "\n.br\n"; next }
    text = (text == "" ? "" : text "\n") esc(line)
    next
}
/^$/ { if (text != "") { print ".PP"; print text; flush_text() } next }
