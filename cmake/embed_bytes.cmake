# cmake -DINPUT=file -DOUTPUT=header -DNAME=identifier -P embed_bytes.cmake:
# writes a header that holds INPUT's bytes as `inline constexpr unsigned char NAME[]`.
file(READ "${INPUT}" hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
get_filename_component(input_name "${INPUT}" NAME)
file(WRITE "${OUTPUT}" "// Generated from ${input_name} by cmake/embed_bytes.cmake.\n#pragma once\n\n"
                       "inline constexpr unsigned char ${NAME}[] = {${bytes}};\n")
