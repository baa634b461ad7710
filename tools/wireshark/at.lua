-- Wireshark dissector for AT, the small remote-call protocol of this project
-- (wire contract: 16-byte big-endian header, JSON body; see docs/PROTOCOL.md).
--
-- Load it for one run:
--     tshark -X lua_script:tools/wireshark/at.lua -r capture.pcap -Y atrpc
-- or install it for good: copy it to ~/.local/lib/wireshark/plugins/.
-- Forward links (atrpc.response_in, atrpc.cancelled_in) need a two-pass
-- read: `tshark -2`.
--
-- Contract section 10: NOTIFY (0x0010) is a type bit. A NOTIFY frame is a
-- notification (a call nobody answers: `func`) or an event (`topic`):
-- atrpc.notify is "call" or "event"; events show atrpc.event.topic,
-- atrpc.event.n and atrpc.event.value (raw JSON) or atrpc.event.end. A
-- call's `deadline_ms` is atrpc.deadline_ms. An `rpc.cancel` (NOTIFY or
-- REQUEST) shows the seq it names as atrpc.cancel.seq and links to that
-- call (atrpc.cancel.call_in); the cancelled call links back
-- (atrpc.cancelled_in).
--
-- The protocol is named `atrpc` because Wireshark's own `at` is the modem
-- AT-command dissector. It decodes TCP and UDP port 16724, plus the port of
-- the preference "atrpc.port" (e.g. `-o atrpc.port:5000`).
-- Wireshark's Lua is 5.2: bit operations go through bit32.

local MAGIC = 0x4154
local HEADER_LEN = 16
local DEFAULT_PORT = 16724
local MAX_LENGTH = 16 * 1024 * 1024 -- larger `length`s are marked, never read
local AUTH_TRAILER = 24 -- 8-byte session id + 16-byte tag
local PT_TCP = 2 -- pinfo.port_type of TCP (epan's port_type enum)

local FLAG_REQUEST, FLAG_RESPONSE, FLAG_ERROR, FLAG_AUTH, FLAG_NOTIFY = 0x1, 0x2, 0x4, 0x8, 0x10
local TYPE_BITS = FLAG_REQUEST + FLAG_RESPONSE + FLAG_ERROR + FLAG_NOTIFY -- AUTH is no type bit
local KIND_NAMES = {
    [FLAG_REQUEST] = "Request",
    [FLAG_RESPONSE] = "Response",
    [FLAG_ERROR] = "Error",
    [FLAG_NOTIFY] = "Notify",
}

local atrpc = Proto("atrpc", "AT remote call protocol")

local f = atrpc.fields
f.magic = ProtoField.uint16("atrpc.magic", "Magic", base.HEX)
f.flags = ProtoField.uint16("atrpc.flags", "Flags", base.HEX)
f.request = ProtoField.bool("atrpc.flags.request", "Request", 16, nil, FLAG_REQUEST)
f.response = ProtoField.bool("atrpc.flags.response", "Response", 16, nil, FLAG_RESPONSE)
f.error = ProtoField.bool("atrpc.flags.error", "Error", 16, nil, FLAG_ERROR)
f.auth = ProtoField.bool("atrpc.flags.auth", "Authenticated", 16, nil, FLAG_AUTH)
f.notify_bit = ProtoField.bool("atrpc.flags.notify", "Notify (one-way)", 16, nil, FLAG_NOTIFY)
f.notify = ProtoField.string("atrpc.notify", "One-way frame (call or event)")
f.event_topic = ProtoField.string("atrpc.event.topic", "Event topic")
f.event_n = ProtoField.uint32("atrpc.event.n", "Event number", base.DEC)
f.event_value = ProtoField.string("atrpc.event.value", "Event value (JSON)")
f.event_end = ProtoField.string("atrpc.event.end", "Subscription ended")
f.deadline_ms = ProtoField.uint32("atrpc.deadline_ms", "Deadline (ms)", base.DEC)
f.cancel_seq = ProtoField.uint32("atrpc.cancel.seq", "Cancels the call with seq", base.DEC)
f.cancel_call_in = ProtoField.framenum("atrpc.cancel.call_in", "Cancelled call in", base.NONE, frametype.REQUEST)
f.cancelled_in = ProtoField.framenum("atrpc.cancelled_in", "Cancelled in", base.NONE, frametype.NONE)
f.seq = ProtoField.uint32("atrpc.seq", "Sequence number", base.DEC)
f.length = ProtoField.uint32("atrpc.length", "Length", base.DEC)
f.crc = ProtoField.uint32("atrpc.crc", "CRC-32", base.HEX)
f.crc_status = ProtoField.string("atrpc.crc.status", "CRC status")
f.func = ProtoField.string("atrpc.func", "Function")
f.status = ProtoField.string("atrpc.status", "Status")
f.code = ProtoField.string("atrpc.code", "Error code")
f.session = ProtoField.bytes("atrpc.session", "Session id")
f.tag = ProtoField.bytes("atrpc.tag", "Tag")
f.response_in = ProtoField.framenum("atrpc.response_in", "Response in", base.NONE, frametype.RESPONSE)
f.request_in = ProtoField.framenum("atrpc.request_in", "Request in", base.NONE, frametype.REQUEST)
f.time = ProtoField.relative_time("atrpc.time", "Time since request")
f.undecoded = ProtoField.bytes("atrpc.undecoded", "Undecoded bytes")

local e = {
    bad_magic = ProtoExpert.new("atrpc.bad_magic", "Not AT / out of step: wrong magic",
        expert.group.MALFORMED, expert.severity.ERROR),
    too_large = ProtoExpert.new("atrpc.too_large", "Length over the dissector's limit (16 MiB)",
        expert.group.MALFORMED, expert.severity.ERROR),
    bad_crc = ProtoExpert.new("atrpc.bad_crc", "CRC-32 of the body does not match",
        expert.group.CHECKSUM, expert.severity.WARN),
    bad_kind = ProtoExpert.new("atrpc.bad_kind", "Flags must carry exactly one type bit (REQUEST, RESPONSE, ERROR, NOTIFY)",
        expert.group.PROTOCOL, expert.severity.WARN),
    short_auth = ProtoExpert.new("atrpc.short_auth", "AUTH frame with length under 24",
        expert.group.MALFORMED, expert.severity.WARN),
    truncated = ProtoExpert.new("atrpc.truncated", "Frame shorter than header + length",
        expert.group.MALFORMED, expert.severity.ERROR),
    datagram_size = ProtoExpert.new("atrpc.datagram_size", "Datagram size is not 16 + length (receivers drop it)",
        expert.group.MALFORMED, expert.severity.WARN),
}
atrpc.experts = { e.bad_magic, e.too_large, e.bad_crc, e.bad_kind, e.short_auth, e.truncated, e.datagram_size }

local json = Dissector.get("json")
local frame_time = Field.new("frame.time")

-- CRC-32/ISO-HDLC (zlib): reflected polynomial 0xEDB88320, init and final
-- xor 0xFFFFFFFF.
local CRC_TABLE = {}
for i = 0, 255 do
    local c = i
    for _ = 1, 8 do
        if bit32.band(c, 1) == 1 then
            c = bit32.bxor(0xEDB88320, bit32.rshift(c, 1))
        else
            c = bit32.rshift(c, 1)
        end
    end
    CRC_TABLE[i] = c
end

local function crc32(s)
    local crc = 0xFFFFFFFF
    for i = 1, #s do
        crc = bit32.bxor(CRC_TABLE[bit32.band(bit32.bxor(crc, s:byte(i)), 0xFF)], bit32.rshift(crc, 8))
    end
    return bit32.bxor(crc, 0xFFFFFFFF)
end
assert(crc32("123456789") == 0xCBF43926, "atrpc: CRC-32 self-check failed")

-- The string-valued members of a JSON text's top-level object, as raw text
-- (escapes left in). Members of nested objects and arrays are skipped.
local function top_level_strings(s)
    local out, depth, key, i = {}, 0, nil, 1
    while true do
        i = s:find('["{}%[%]]', i)
        if not i then return out end
        local c = s:sub(i, i)
        if c == '"' then
            local j = i + 1
            while true do -- the closing quote, skipping escapes
                j = s:find('["\\]', j)
                if not j then return out end
                if s:sub(j, j) == '"' then break end
                j = j + 2
            end
            if depth == 1 then
                local text = s:sub(i + 1, j - 1)
                if s:find("^%s*:", j + 1) then
                    key = text
                elseif key then
                    if out[key] == nil then out[key] = text end
                    key = nil
                end
            end
            i = j + 1
        else
            depth = depth + ((c == "{" or c == "[") and 1 or -1)
            i = i + 1
        end
    end
end

-- The members of a JSON text's top-level object: name (raw, escapes left
-- in) -> raw JSON text of its value (strings with their quotes). Nested
-- objects and arrays are taken whole. Stops at the first thing that is not
-- an object member (the json dissector shows what is wrong).
local function top_level_members(s)
    local out = {}
    local i = s:find("%S")
    if not i or s:sub(i, i) ~= "{" then return out end
    i = i + 1
    local function skip_ws(k) return s:find("%S", k) end
    local function string_end(k) -- k at the opening quote; returns the closing one
        local j = k + 1
        while true do
            j = s:find('["\\]', j)
            if not j then return nil end
            if s:sub(j, j) == '"' then return j end
            j = j + 2
        end
    end
    local function value_end(k) -- the last byte of the value starting at k
        local c = s:sub(k, k)
        if c == '"' then return string_end(k) end
        if c == "{" or c == "[" then
            local depth, j = 0, k
            while j do
                j = s:find('["{}%[%]]', j)
                if not j then return nil end
                local d = s:sub(j, j)
                if d == '"' then
                    j = string_end(j)
                    if not j then return nil end
                else
                    depth = depth + ((d == "{" or d == "[") and 1 or -1)
                    if depth == 0 then return j end
                end
                j = j + 1
            end
            return nil
        end
        local j = s:find("[%s,}%]]", k)
        return j and j - 1 or #s
    end
    while true do
        i = skip_ws(i)
        if not i or s:sub(i, i) ~= '"' then return out end
        local j = string_end(i)
        if not j then return out end
        local name = s:sub(i + 1, j - 1)
        i = skip_ws(j + 1)
        if not i or s:sub(i, i) ~= ":" then return out end
        i = skip_ws(i + 1)
        if not i then return out end
        local k = value_end(i)
        if not k or k < i then return out end
        if out[name] == nil then out[name] = s:sub(i, k) end
        i = skip_ws(k + 1)
        if not i or s:sub(i, i) ~= "," then return out end
        i = i + 1
    end
end

-- A JSON integer text 0..4294967295 as a number, else nil.
local function u32(text)
    if not text or not text:match("^%d+$") or #text > 10 then return nil end
    local v = tonumber(text)
    if v > 4294967295 then return nil end
    return v
end

-- Request/reply matching. Keyed by transport, both endpoints (sorted) and
-- seq; filled on the first pass, read on every pass.
local pending -- conversation+seq -> { frame, time, id } of the latest request
local links -- frame+conversation+seq -> { request_in, response_in, time }

-- Cancels (contract 10.4): a caller names its own call by seq on the same
-- association, so calls are keyed by direction (source, destination) and
-- seq. Filled on the first pass.
local calls -- direction+seq -> frame number of the latest call
local cancels -- frame number of a cancel -> frame number of the call
local cancelled -- frame number of a call -> frame number of its first cancel

local function reset()
    pending, links = {}, {}
    calls, cancels, cancelled = {}, {}, {}
end
reset()
atrpc.init = reset

local function match(pinfo, is_request, seq)
    local a = tostring(pinfo.src) .. " " .. pinfo.src_port
    local b = tostring(pinfo.dst) .. " " .. pinfo.dst_port
    if a > b then a, b = b, a end
    local key = table.concat({ pinfo.port_type, a, b, seq }, "|")
    local id = pinfo.number .. "|" .. key
    if not pinfo.visited and not links[id] then
        local fi = frame_time()
        local now = fi and fi.value
        if is_request then
            links[id] = {}
            pending[key] = { frame = pinfo.number, time = now, id = id }
        else
            local req = pending[key]
            if req then
                links[id] = { request_in = req.frame, time = now and req.time and (now - req.time) }
                links[req.id].response_in = links[req.id].response_in or pinfo.number
            end
        end
    end
    return links[id]
end

local function direction_key(pinfo, seq)
    return table.concat({ pinfo.port_type, tostring(pinfo.src), pinfo.src_port,
        tostring(pinfo.dst), pinfo.dst_port, seq }, "|")
end

-- Notes a call (REQUEST or NOTIFY with func) on the first pass.
local function note_call(pinfo, seq)
    if not pinfo.visited then calls[direction_key(pinfo, seq)] = pinfo.number end
end

-- Notes a cancel of the call `seq` from the same sender on the first pass;
-- returns the cancelled call's frame number, if it was seen.
local function note_cancel(pinfo, seq)
    if not pinfo.visited and not cancels[pinfo.number] then
        local call = calls[direction_key(pinfo, seq)]
        if call then
            cancels[pinfo.number] = call
            cancelled[call] = cancelled[call] or pinfo.number
        end
    end
    return cancels[pinfo.number]
end

-- Dissects one frame (all of tvb); returns the number of bytes used.
local function dissect_one(tvb, pinfo, tree)
    local size = tvb:len()
    -- The first AT frame of a packet sets the columns, the next ones append
    -- (the json dissector also writes them, so they are rewritten below).
    local first = tostring(pinfo.cols.protocol) ~= "ATRPC"
    local info_before = tostring(pinfo.cols.info)
    local function set_info(text)
        pinfo.cols.protocol = "ATRPC"
        pinfo.cols.info = first and text or (info_before .. ", " .. text)
    end

    local t = tree:add(atrpc, tvb())
    if size < 2 or tvb(0, 2):uint() ~= MAGIC then
        if size >= 2 then t:add(f.magic, tvb(0, 2)) end
        t:add(f.undecoded, tvb()):add_proto_expert_info(e.bad_magic)
        t:append_text(", not AT / out of step")
        set_info("Not AT / out of step")
        return size
    end
    t:add(f.magic, tvb(0, 2))
    if size < HEADER_LEN then -- only a datagram can be this short
        t:add(f.undecoded, tvb(2)):add_proto_expert_info(e.truncated)
        set_info("Truncated header")
        return size
    end

    local flags = tvb(2, 2):uint()
    local seq = tvb(4, 4):uint()
    local length = tvb(8, 4):uint()
    local ft = t:add(f.flags, tvb(2, 2))
    ft:add(f.request, tvb(2, 2))
    ft:add(f.response, tvb(2, 2))
    ft:add(f.error, tvb(2, 2))
    ft:add(f.auth, tvb(2, 2))
    ft:add(f.notify_bit, tvb(2, 2))
    t:add(f.seq, tvb(4, 4))
    local lt = t:add(f.length, tvb(8, 4))
    local ct = t:add(f.crc, tvb(12, 4))

    local type_bits = bit32.band(flags, TYPE_BITS)
    local kind = KIND_NAMES[type_bits]
    if not kind then
        kind = "Invalid"
        ft:add_proto_expert_info(e.bad_kind)
    end
    local summary = kind .. " seq=" .. seq
    local auth = bit32.band(flags, FLAG_AUTH) ~= 0

    if length > MAX_LENGTH then
        lt:add_proto_expert_info(e.too_large)
        if size > HEADER_LEN then t:add(f.undecoded, tvb(HEADER_LEN)) end
        t:append_text(", " .. summary .. " (length too large)")
        set_info(summary .. " [length too large]")
        return size
    end
    if size < HEADER_LEN + length then
        t:add_proto_expert_info(e.truncated)
        t:append_text(", " .. summary .. " (truncated)")
        set_info(summary .. " [truncated]")
        return size
    end

    if size > HEADER_LEN + length then -- a datagram with bytes after the frame
        t:add(f.undecoded, tvb(HEADER_LEN + length)):add_proto_expert_info(e.datagram_size)
    end

    local crc_good = crc32(tvb:raw(HEADER_LEN, length)) == tvb(12, 4):uint()
    local st = ct:add(f.crc_status, crc_good and "good" or "bad")
    st:set_generated()
    if not crc_good then st:add_proto_expert_info(e.bad_crc) end

    local json_len = length
    if auth then
        if length >= AUTH_TRAILER then
            json_len = length - AUTH_TRAILER
            t:add(f.session, tvb(HEADER_LEN + json_len, 8))
            t:add(f.tag, tvb(HEADER_LEN + json_len + 8, 16))
        else
            lt:add_proto_expert_info(e.short_auth)
        end
    end

    local body_text = tvb:raw(HEADER_LEN, json_len)
    local members = top_level_strings(body_text)
    local body_range = tvb(HEADER_LEN, json_len)
    -- A call: a REQUEST, or a NOTIFY with func (a notification).
    local is_call = type_bits == FLAG_REQUEST or (type_bits == FLAG_NOTIFY and members.func ~= nil)
    if type_bits == FLAG_NOTIFY then
        if members.func then
            t:add(f.notify, body_range, "call"):set_generated()
        elseif members.topic then
            t:add(f.notify, body_range, "event"):set_generated()
        else
            t:add(f.notify, body_range, "neither call nor event"):set_generated()
        end
    end
    if is_call then
        if members.func then
            t:add(f.func, body_range, members.func)
            summary = summary .. " " .. members.func
        end
        local raw = top_level_members(body_text)
        local deadline = u32(raw.deadline_ms)
        if deadline then
            t:add(f.deadline_ms, body_range, deadline)
            summary = summary .. " deadline_ms=" .. deadline
        end
        if members.func == "rpc.cancel" and raw.args then
            local named = u32(raw.args:match("^%[%s*(%d+)%s*%]$"))
            if named then
                t:add(f.cancel_seq, body_range, named)
                summary = summary .. "(" .. named .. ")"
                local call = note_cancel(pinfo, named)
                if call then t:add(f.cancel_call_in, call):set_generated() end
            end
        else
            note_call(pinfo, seq)
        end
        if cancelled[pinfo.number] then
            t:add(f.cancelled_in, cancelled[pinfo.number]):set_generated()
            summary = summary .. " [cancelled]"
        end
    elseif type_bits == FLAG_NOTIFY and members.topic then
        summary = "Event seq=" .. seq .. " " .. members.topic
        t:add(f.event_topic, body_range, members.topic)
        local raw = top_level_members(body_text)
        local n = u32(raw.n)
        if n then
            t:add(f.event_n, body_range, n)
            summary = summary .. " n=" .. n
        end
        if raw.value then
            t:add(f.event_value, body_range, raw.value)
        elseif members["end"] then
            t:add(f.event_end, body_range, members["end"])
            summary = summary .. " end=" .. members["end"]
        end
    elseif type_bits == FLAG_RESPONSE or type_bits == FLAG_ERROR then
        if members.status then t:add(f.status, tvb(HEADER_LEN, json_len), members.status) end
        if members.code then
            t:add(f.code, tvb(HEADER_LEN, json_len), members.code)
            summary = summary .. " " .. members.code
        end
    end
    if auth then summary = summary .. " [auth]" end
    if not crc_good then summary = summary .. " [bad CRC]" end

    -- NOTIFY frames get no reply: only requests and replies are matched.
    if type_bits == FLAG_REQUEST or type_bits == FLAG_RESPONSE or type_bits == FLAG_ERROR then
        local link = match(pinfo, type_bits == FLAG_REQUEST, seq)
        if link and link.response_in then t:add(f.response_in, link.response_in):set_generated() end
        if link and link.request_in then t:add(f.request_in, link.request_in):set_generated() end
        if link and link.time then t:add(f.time, link.time):set_generated() end
    end

    t:append_text(", " .. summary)
    if json_len > 0 then json:call(tvb(HEADER_LEN, json_len):tvb(), pinfo, t) end
    set_info(summary)
    return HEADER_LEN + length
end

-- TCP: the length of the PDU at offset; a wrong magic or an absurd length
-- takes the rest of the segment, which dissect_one then marks.
local function pdu_length(tvb, _, offset)
    local rest = tvb:len() - offset
    if tvb(offset, 2):uint() ~= MAGIC then return rest end
    local length = tvb(offset + 8, 4):uint()
    if length > MAX_LENGTH then return rest end
    return HEADER_LEN + length
end

function atrpc.dissector(tvb, pinfo, tree)
    if pinfo.port_type == PT_TCP then
        dissect_tcp_pdus(tvb, tree, HEADER_LEN, pdu_length, dissect_one, true)
        return tvb:len()
    end
    -- UDP (or anything else): one datagram is one frame.
    dissect_one(tvb, pinfo, tree)
    return tvb:len()
end

local tcp_ports = DissectorTable.get("tcp.port")
local udp_ports = DissectorTable.get("udp.port")
tcp_ports:add(DEFAULT_PORT, atrpc)
udp_ports:add(DEFAULT_PORT, atrpc)

atrpc.prefs.port = Pref.uint("Extra port", 0, "Also decode TCP and UDP on this port as AT (0: none)")
local extra_port = 0

function atrpc.prefs_changed()
    local port = atrpc.prefs.port
    if port == extra_port then return end
    if extra_port ~= 0 and extra_port ~= DEFAULT_PORT then
        tcp_ports:remove(extra_port, atrpc)
        udp_ports:remove(extra_port, atrpc)
    end
    if port ~= 0 then
        tcp_ports:add(port, atrpc)
        udp_ports:add(port, atrpc)
    end
    extra_port = port
end
