//+------------------------------------------------------------------+
//| TickStream.mq5 - lossless MT5 tick capture for the tickstream     |
//| bridge. Speaks docs/protocol.md, version 1. User guide: docs/ea.md |
//+------------------------------------------------------------------+
//
// What it does (each step mirrors the TypeScript simulator, which is the tested stand-in):
//   capture  - bridge/capture.ts: a millisecond timer (never OnTick) calls CopyTicksRange per
//              symbol from a cursor {last time_msc, ticks already taken at that ms}; both ends
//              are inclusive, so the first `count` ticks of that ms are skipped. A tick gets its
//              seq once, when captured. Un-ACKed ticks wait in a ring of InpMaxBufferTicks;
//              when it is full capture pauses and the cursors hold (nothing is evicted: the
//              terminal's tick history is the overflow store).
//   session  - bridge/client.ts: CHALLENGE -> HELLO (HMAC-SHA256 proof) -> HELLO_ACK -> SYMBOLS
//              -> TICKS within credit, HEARTBEAT when idle, ACK trims the ring, RESEND rewinds,
//              reconnect with capped exponential backoff and jitter, resending every un-ACKed
//              tick. After an EA restart (empty memory) next_seq and the cursors come from
//              HELLO_ACK and history is re-read from there (protocol.md section 5.7).
//
//   timing   - nothing blocks a handshake or a session for long (issue 19): history is synced
//              before the first connection (WarmUp), capture and live starts run only while
//              streaming or offline and within a time budget per timer event, TICKS frames are
//              capped (InpMaxFrameBytes) with two frames' worth in flight at most, so SocketSend
//              never waits on a bridge that pauses reading. Both sides' timers: docs/ea.md.
//   self-test - at start-up every message the EA writes or reads is checked against the vectors
//              of protocol.md 9 (SelfTest; test/bridge/ea-self-test.test.ts checks the copies).
//
// Byte layout: little-endian; every frame = 12-byte header (magic 0x5354, version, type,
// u32 length, u32 CRC32C over header bytes 0-7 then the payload) + payload (protocol.md 2-3).
// Payload field order is checked against codecs/messages.ts.
//
// MqlTick is 60 bytes on current builds (time, bid, ask, last, volume, time_msc, flags,
// volume_real) and 52 on old builds without volume_real. The EA sends sizeof(MqlTick) as the
// HELLO struct_size and copies each struct verbatim with StructToCharArray (protocol.md 3, 8).
//
// This file cannot be compiled or run in the project's CI: `tickstream sim` (bridge/sim.ts,
// bridge/client.ts, bridge/capture.ts) is the tested mirror. Change both together.
//+------------------------------------------------------------------+
#property copyright   "tickstream"
#property version     "1.10"
#property description "Streams every tick of the listed symbols to the tickstream bridge (docs/ea.md)."
#property description "Add the bridge host to Tools > Options > Expert Advisors, list of allowed URLs."

//--- inputs (docs/ea.md lists each with its meaning)
input string InpHost             = "127.0.0.1"; // Bridge host (must be in the allowed URL list)
input uint   InpPort             = 5555;        // Bridge port (bridge ingressPort)
input string InpBridge           = "";          // Bridge pool host:port,host:port, tried in turn (empty: InpHost:InpPort)
input string InpSource           = "";          // Source id, unique per terminal (A-Z a-z 0-9 . _ -)
input string InpSecret           = "";          // Source secret (bridge sourceSecrets)
input string InpSymbols          = "";          // Symbols, comma separated (empty: this chart's symbol)
input bool   InpTls              = false;       // TLS (bridge has ingressTlsCert)
input int    InpTimerMs          = 10;          // Capture timer period, ms
input int    InpMaxBufferTicks   = 200000;      // Un-ACKed ticks held at most (capture pauses when full)
input int    InpMaxTicksPerFrame = 16384;       // Ticks per TICKS frame at most (the bridge's limit also applies)
input int    InpMaxFrameBytes    = 32768;       // TICKS frame payload bytes at most; two frames' worth in flight
input int    InpHeartbeatMs      = 1000;        // Heartbeat after this long idle, ms (bridge's value if smaller; 0 = bridge's)
input int    InpBackoffMinMs     = 1000;        // First reconnect delay, ms
input int    InpBackoffMaxMs     = 30000;       // Reconnect delay cap, ms

//--- protocol constants (protocol.md 2, 6)
#define PROTO_VERSION        1
#define FRAME_MAGIC          0x5354
#define HEADER_BYTES         12
#define TICKS_HEADER_BYTES   14
#define NONCE_BYTES          32
#define PROOF_BYTES          32
#define DEFAULT_MAX_FRAME    1048576
#define MAX_TEXT_CHARS       1000
#define MAX_NAME_BYTES       64
#define MAX_SAFE_INT         9007199254740991

//--- message types (protocol.md 2)
#define MSG_CHALLENGE        1
#define MSG_HELLO            2
#define MSG_HELLO_ACK        3
#define MSG_SYMBOLS          4
#define MSG_TICKS            5
#define MSG_HEARTBEAT        6
#define MSG_ACK              7
#define MSG_RESEND           8
#define MSG_ERROR            9
#define MSG_BYE              10

//--- ERROR codes the EA acts on (protocol.md 7; ERROR_WIRE_CODES in codecs/messages.ts)
#define TS_ERR_FRAME_MAGIC     0
#define TS_ERR_FRAME_VERSION   1
#define TS_ERR_FRAME_TYPE      2
#define TS_ERR_FRAME_TOO_LARGE 3
#define TS_ERR_FRAME_CRC       5
#define TS_ERR_FRAME_PAYLOAD   6
#define TS_ERR_STRUCT_SIZE     7
#define TS_ERR_LIMIT           11
#define TS_ERR_PROTOCOL_STATE  13
#define TS_ERR_AUTH            14
#define TS_ERR_INTERNAL        30

//--- EA-side timing
#define CONNECT_TIMEOUT_MS   5000     // SocketConnect blocks at most this long
#define SOCKET_TIMEOUT_MS    10000    // SocketTimeouts: a send blocked this long fails (peer treated as gone)
#define HANDSHAKE_TIMEOUT_MS 30000    // CHALLENGE and HELLO_ACK must arrive within this
#define PUMP_BUDGET_MS       50       // time spent sending per timer event, at most
#define CAPTURE_BUDGET_MS    50       // history reads (capture, live starts) per timer event, about
#define IN_FLIGHT_FRAMES     2        // capped frames' worth of ticks sent and not yet ACKed, at most
#define WARMUP_TRIES         3        // sync reads per symbol before connecting without it
#define COURTESY_TIMEOUT_MS  200      // send timeout of a last BYE/ERROR to a peer that may be gone
#define CATCHUP_SPAN_MS      60000    // a cursor further behind than this is read in time windows
#define READ_CHUNK           65536
#define WARN_EVERY_MS        10000

//--- connection states
#define ST_OFFLINE           0        // no socket; reconnect when g_nextConnectAt passes
#define ST_CHALLENGE         1        // connected, waiting for CHALLENGE
#define ST_HELLO_ACK         2        // HELLO sent, waiting for HELLO_ACK
#define ST_READY             3        // session open: TICKS/HEARTBEAT may flow

const uint CRC32C_POLY = 0x82F63B78;  // reflected Castagnoli polynomial
const uint CRC32C_INIT = 0xFFFFFFFF;

string g_errNames[33] =
  {
   "ERR_FRAME_MAGIC", "ERR_FRAME_VERSION", "ERR_FRAME_TYPE", "ERR_FRAME_TOO_LARGE",
   "ERR_FRAME_TRUNCATED", "ERR_FRAME_CRC", "ERR_FRAME_PAYLOAD", "ERR_STRUCT_SIZE",
   "ERR_TICK_COUNT", "ERR_TICK_VALUE", "ERR_UNKNOWN_SYMBOL", "ERR_LIMIT", "ERR_SEQ_GAP",
   "ERR_PROTOCOL_STATE", "ERR_AUTH", "ERR_HANDSHAKE_TIMEOUT", "ERR_HEARTBEAT_TIMEOUT",
   "ERR_SOURCE_REPLACED", "ERR_TOO_MANY_CONNECTIONS", "ERR_RATE_LIMIT", "ERR_SHUTTING_DOWN",
   "ERR_FILE_FORMAT", "ERR_FILE_ENCODING", "ERR_FILE_EMPTY", "ERR_TIME_ZONE", "ERR_CONFIG",
   "ERR_KAFKA", "ERR_REDIS", "ERR_POSTGRES", "ERR_NATIVE_ADDON", "ERR_INTERNAL", "ERR_USAGE",
   "ERR_SOURCE_FENCED"
  };
string g_stateNames[4] = {"offline", "waiting for CHALLENGE", "waiting for HELLO_ACK", "streaming"};

//+------------------------------------------------------------------+
//| Small helpers                                                    |
//+------------------------------------------------------------------+
long MinL(const long a, const long b) { return a < b ? a : b; }
int  MinI(const int a, const int b)   { return a < b ? a : b; }
int  MaxI(const int a, const int b)   { return a > b ? a : b; }
int  ToInt(const uint v)              { return v > 2147483647 ? 2147483647 : (int)v; }

string g_source = "";
void Log(const string s) { Print("TickStream[", g_source, "]: ", s); }

// UTF-8 bytes of s, without the terminating 0 that StringToCharArray adds.
int Utf8(const string s, uchar &out[])
  {
   ArrayResize(out, 0);
   if(StringLen(s) == 0)
      return 0;
   int n = StringToCharArray(s, out, 0, WHOLE_ARRAY, CP_UTF8);
   if(n > 0 && out[n - 1] == 0)
      n--;
   ArrayResize(out, n);
   return n;
  }

uint Get32(const uchar &b[], const int at)
  {
   return (uint)b[at] | ((uint)b[at + 1] << 8) | ((uint)b[at + 2] << 16) | ((uint)b[at + 3] << 24);
  }

// Server / GMT wall clocks in ms, as HELLO and HEARTBEAT carry them (protocol.md 3).
long ServerMs() { return (long)TimeTradeServer() * 1000; }
long GmtMs()    { return (long)TimeGMT() * 1000; }

string MscToString(const long msc)
  {
   return TimeToString((datetime)(msc / 1000), TIME_DATE | TIME_SECONDS) + "." + StringFormat("%03d", (int)(msc % 1000));
  }

//+------------------------------------------------------------------+
//| CRC32C, table-driven (protocol.md 2 and 8)                       |
//+------------------------------------------------------------------+
uint g_crcTable[256];

void CrcInit()
  {
   for(uint n = 0; n < 256; n++)
     {
      uint c = n;
      for(int k = 0; k < 8; k++)
         c = ((c & 1) != 0) ? ((c >> 1) ^ CRC32C_POLY) : (c >> 1);
      g_crcTable[n] = c;
     }
  }

// Continues a CRC over b[from, to); the register is kept un-inverted between calls.
uint CrcUpdate(uint c, const uchar &b[], const int from, const int to)
  {
   for(int i = from; i < to; i++)
      c = g_crcTable[(c ^ b[i]) & 0xFF] ^ (c >> 8);
   return c;
  }

// Frame checksum: header bytes 0-7 of the frame at `at`, then its payload of `len` bytes.
uint FrameCrc(const uchar &b[], const int at, const int len)
  {
   uint c = CrcUpdate(CRC32C_INIT, b, at, at + 8);
   c = CrcUpdate(c, b, at + HEADER_BYTES, at + HEADER_BYTES + len);
   return c ^ CRC32C_INIT;
  }

//+------------------------------------------------------------------+
//| HMAC-SHA256 from CryptEncode (RFC 2104; protocol.md 4 and 8)     |
//+------------------------------------------------------------------+
bool Sha256(const uchar &data[], uchar &out[])
  {
   uchar noKey[];
   return CryptEncode(CRYPT_HASH_SHA256, data, noKey, out) == 32;
  }

bool HmacSha256(const uchar &key[], const uchar &msg[], uchar &out[])
  {
   uchar k[64];
   for(int i = 0; i < 64; i++)
      k[i] = 0;
   int klen = ArraySize(key);
   if(klen > 64)
     {
      uchar kh[];
      if(!Sha256(key, kh))
         return false;
      ArrayCopy(k, kh, 0, 0, 32);
     }
   else
      if(klen > 0)
         ArrayCopy(k, key, 0, 0, klen);
   int mlen = ArraySize(msg);
   uchar inner[];
   ArrayResize(inner, 64 + mlen);
   for(int i = 0; i < 64; i++)
      inner[i] = (uchar)(k[i] ^ 0x36);
   if(mlen > 0)
      ArrayCopy(inner, msg, 64, 0, mlen);
   uchar ih[];
   if(!Sha256(inner, ih))
      return false;
   uchar outer[];
   ArrayResize(outer, 96);
   for(int i = 0; i < 64; i++)
      outer[i] = (uchar)(k[i] ^ 0x5C);
   ArrayCopy(outer, ih, 64, 0, 32);
   return Sha256(outer, out);
  }

// proof = HMAC-SHA256(key = utf8(secret), message = nonce || utf8(source))
bool HelloProof(const string secret, const uchar &nonce[], const string source, uchar &proof[])
  {
   uchar key[], src[], msg[];
   Utf8(secret, key);
   int slen = Utf8(source, src);
   ArrayResize(msg, NONCE_BYTES + slen);
   ArrayCopy(msg, nonce, 0, 0, NONCE_BYTES);
   if(slen > 0)
      ArrayCopy(msg, src, NONCE_BYTES, 0, slen);
   return HmacSha256(key, msg, proof);
  }

//+------------------------------------------------------------------+
//| Frame writer: header placeholder, little-endian fields, then     |
//| Finish() fills in the length and the CRC (codecs/frame.ts).      |
//+------------------------------------------------------------------+
class CWriter
  {
public:
   uchar             b[];
   int               n;

                     CWriter() : n(0) {}
   void              Need(const int k)
     {
      int want = n + k;
      int have = ArraySize(b);
      if(have < want)
         ArrayResize(b, MaxI(want, 2 * have));
     }
   void              U8(const uint v)   { Need(1); b[n++] = (uchar)(v & 0xFF); }
   void              U16(const uint v)  { Need(2); b[n++] = (uchar)(v & 0xFF); b[n++] = (uchar)((v >> 8) & 0xFF); }
   void              U32(const uint v)  { Need(4); for(int i = 0; i < 4; i++) b[n++] = (uchar)((v >> (8 * i)) & 0xFF); }
   void              U64(const ulong v) { Need(8); for(int i = 0; i < 8; i++) b[n++] = (uchar)((v >> (8 * i)) & 0xFF); }
   void              I64(const long v)  { U64((ulong)v); }
   void              Bytes(const uchar &src[], const int from, const int count)
     {
      if(count <= 0)
         return;
      Need(count);
      ArrayCopy(b, src, n, from, count);
      n += count;
     }
   // str = u16 byte length + UTF-8 bytes (protocol.md 1)
   void              Str(const string s)
     {
      uchar u[];
      int len = Utf8(s, u);
      U16((uint)len);
      Bytes(u, 0, len);
     }
   void              Begin(const uchar type)
     {
      n = 0;
      U16(FRAME_MAGIC);
      U8(PROTO_VERSION);
      U8(type);
      U32(0);                                   // payload length, set by Finish
      U32(0);                                   // CRC32C, set by Finish
     }
   void              Put32(const int at, const uint v)
     {
      for(int i = 0; i < 4; i++)
         b[at + i] = (uchar)((v >> (8 * i)) & 0xFF);
     }
   void              Finish()
     {
      int len = n - HEADER_BYTES;
      Put32(4, (uint)len);
      Put32(8, FrameCrc(b, 0, len));
     }
  };

//+------------------------------------------------------------------+
//| Payload reader: any overrun or out-of-range value clears ok      |
//| (the decoders of codecs/messages.ts).                            |
//+------------------------------------------------------------------+
class CReader
  {
public:
   uchar             b[];
   int               pos;
   int               len;
   bool              ok;

                     CReader() : pos(0), len(0), ok(false) {}
   void              Load(const uchar &src[], const int from, const int count)
     {
      ArrayResize(b, count);
      if(count > 0)
         ArrayCopy(b, src, 0, from, count);
      pos = 0;
      len = count;
      ok = true;
     }
   bool              Has(const int k)
     {
      if(!ok || k < 0 || pos + k > len)
         ok = false;
      return ok;
     }
   uint              U8()  { if(!Has(1)) return 0; return (uint)b[pos++]; }
   uint              U16() { if(!Has(2)) return 0; uint v = (uint)b[pos] | ((uint)b[pos + 1] << 8); pos += 2; return v; }
   uint              U32() { if(!Has(4)) return 0; uint v = Get32(b, pos); pos += 4; return v; }
   ulong             Raw64()
     {
      if(!Has(8))
         return 0;
      ulong v = 0;
      for(int i = 7; i >= 0; i--)
         v = (v << 8) | (ulong)b[pos + i];
      pos += 8;
      return v;
     }
   // u64 values must stay below 2^53 (protocol.md 1)
   long              U64()
     {
      ulong v = Raw64();
      if(v > (ulong)MAX_SAFE_INT)
        {
         ok = false;
         return 0;
        }
      return (long)v;
     }
   long              I64()
     {
      long v = (long)Raw64();
      if(v > MAX_SAFE_INT || v < -MAX_SAFE_INT)
        {
         ok = false;
         return 0;
        }
      return v;
     }
   string            Str()
     {
      int k = (int)U16();
      if(!Has(k))
         return "";
      string s = (k > 0) ? CharArrayToString(b, pos, k, CP_UTF8) : "";
      pos += k;
      return s;
     }
   void              Bytes(uchar &out[], const int k)
     {
      ArrayResize(out, 0);
      if(!Has(k))
         return;
      ArrayResize(out, k);
      ArrayCopy(out, b, 0, pos, k);
      pos += k;
     }
   bool              End() { return ok && pos == len; }   // every payload is exactly its fields
  };

//+------------------------------------------------------------------+
//| State                                                            |
//+------------------------------------------------------------------+
int      g_structSize = 0;          // sizeof(MqlTick): 60, or 52 on old builds

// symbols and their capture cursors (capture.ts Cursor)
string   g_sym[];
uchar    g_digits[];
long     g_curMsc[];                // newest time_msc taken
int      g_curCount[];              // ticks of that millisecond already taken
long     g_span[];                  // catch-up window in ms; 0 = open-ended (live)
ulong    g_warnAt[];
bool     g_needLive[];              // no cursor yet: PrepareCursors starts it live after SYMBOLS
long     g_originMsc[];             // where this run started the symbol (capture.ts origins)
int      g_originCount[];
bool     g_hasOrigin[];
int      g_nsym = 0;
int      g_warm = 0;                // symbols whose history sync read is done (WarmUp)
int      g_warmTries = 0;           // sync reads of symbol g_warm that timed out
int      g_capFrom = 0;             // Capture starts here: the rotation under the time budget

// ring of captured, un-ACKed ticks: seqs [g_bufStart, g_nextSeq), oldest at g_head
MqlTick  g_ring[];
ushort   g_ringSym[];
int      g_cap = 0;
int      g_head = 0;
long     g_bufStart = 1;
long     g_nextSeq = 1;             // seq the next captured tick gets
long     g_nextSend = 1;            // next seq to put in a TICKS frame
bool     g_amnesia = true;          // no HELLO_ACK yet since start: capture waits for the resume state
MqlTick  g_ticks[];                 // CopyTicksRange target

// session
int      g_sock = INVALID_HANDLE;
bool     g_tls = false;              // InpTls, or port 443 where the terminal starts TLS by itself
int      g_state = ST_OFFLINE;
bool     g_fatal = false;           // a person must fix something; no more retries
ulong    g_stateSince = 0;
ulong    g_nextConnectAt = 0;
ulong    g_lastSentAt = 0;
ulong    g_hbWaitSince = 0;         // first HEARTBEAT sent since the bridge last spoke; 0 = none
int      g_backoffMs = 1000;
long     g_credit = 0;              // exclusive: only seq < g_credit may be sent (protocol.md 5.4)
int      g_maxTicksFrame = 1;
int      g_maxFrameBytes = DEFAULT_MAX_FRAME;
int      g_hbIntervalMs = 1000;
int      g_hbTimeoutMs = 15000;
uchar    g_rx[];
int      g_rxLen = 0;
CWriter  g_w;
CReader  g_rd;

// statistics for the chart comment
long     g_ackedSeq = 0;
long     g_sentTicks = 0;
long     g_captured = 0;
int      g_connects = 0;
ulong    g_statusAt = 0;

// the bridges of a pool (InpBridge, else InpHost:InpPort); each connection tries the next one
string   g_bridgeHost[];
uint     g_bridgePort[];
int      g_nbridge = 0;
int      g_bridgeNext = 0;
string   g_bridgeList = "";
string   g_host = "";               // the bridge of the current (or last) connection
uint     g_port = 0;

int Slot(const long seq) { return (int)((g_head + (seq - g_bufStart)) % g_cap); }

//+------------------------------------------------------------------+
//| Message codecs: one writer and one reader per message the EA     |
//| sends or receives (codecs/messages.ts); the session and the      |
//| self-test use the same functions, so the self-test covers them.  |
//+------------------------------------------------------------------+
// HELLO: str source, u16 struct_size, u32 terminal_build, i64 server_time_ms, i64 gmt_time_ms,
//        u16 n, str symbol x n, proof[32]
void WriteHello(const string source, const int structSize, const uint build, const long srv, const long gmt,
                const string &syms[], const int n, const uchar &proof[])
  {
   g_w.Begin(MSG_HELLO);
   g_w.Str(source);
   g_w.U16((uint)structSize);
   g_w.U32(build);
   g_w.I64(srv);
   g_w.I64(gmt);
   g_w.U16((uint)n);
   for(int k = 0; k < n; k++)
      g_w.Str(syms[k]);
   g_w.Bytes(proof, 0, PROOF_BYTES);
  }

// SYMBOLS: u16 n, { u16 id, u8 digits, str name } x n; ids are per connection (k + 1)
void WriteSymbols(const string &syms[], const uchar &digits[], const int n)
  {
   g_w.Begin(MSG_SYMBOLS);
   g_w.U16((uint)n);
   for(int k = 0; k < n; k++)
     {
      g_w.U16((uint)k + 1);
      g_w.U8(digits[k]);
      g_w.Str(syms[k]);
     }
  }

// TICKS: u16 symbol_id, u64 first_seq, u32 count, then count x MqlTick (PutTick)
void BeginTicks(const uint symbolId, const long firstSeq, const long count)
  {
   g_w.Begin(MSG_TICKS);
   g_w.U16(symbolId);
   g_w.U64((ulong)firstSeq);
   g_w.U32((uint)count);
   g_w.Need((int)count * g_structSize);
  }

// The struct verbatim, as CopyTicksRange filled it (protocol.md 3, MqlTick).
bool PutTick(const MqlTick &t)
  {
   g_w.Need(g_structSize);
   if(!StructToCharArray(t, g_w.b, (uint)g_w.n))
      return false;
   g_w.n += g_structSize;
   return true;
  }

// HEARTBEAT: i64 server_time_ms, i64 gmt_time_ms, read together
void WriteHeartbeat(const long srv, const long gmt)
  {
   g_w.Begin(MSG_HEARTBEAT);
   g_w.I64(srv);
   g_w.I64(gmt);
  }

// CHALLENGE: nonce[32], u8 min_version, u8 max_version
bool ReadChallenge(uchar &nonce[], uint &minV, uint &maxV)
  {
   g_rd.Bytes(nonce, NONCE_BYTES);
   minV = g_rd.U8();
   maxV = g_rd.U8();
   return g_rd.End() && minV >= 1 && minV <= maxV;
  }

// HELLO_ACK: u64 next_seq, u64 credit_limit, u32 heartbeat_interval_ms, u32 heartbeat_timeout_ms,
//            u32 max_frame_bytes, u32 max_ticks_per_frame, u16 max_symbols,
//            u16 n, { str symbol, i64 last_msc, u32 count_at_msc } x n
struct HelloAck
  {
   long              nextSeq;
   long              credit;
   uint              hbInterval;
   uint              hbTimeout;
   uint              maxFrame;
   uint              maxTicks;
   uint              maxSymbols;
   int               n;
   string            names[];
   long              mscs[];
   uint              counts[];
  };

bool ReadHelloAck(HelloAck &a)
  {
   a.nextSeq = g_rd.U64();
   a.credit = g_rd.U64();
   a.hbInterval = g_rd.U32();
   a.hbTimeout = g_rd.U32();
   a.maxFrame = g_rd.U32();
   a.maxTicks = g_rd.U32();
   a.maxSymbols = g_rd.U16();
   a.n = (int)g_rd.U16();
   ArrayResize(a.names, a.n);
   ArrayResize(a.mscs, a.n);
   ArrayResize(a.counts, a.n);
   for(int i = 0; i < a.n && g_rd.ok; i++)
     {
      a.names[i] = g_rd.Str();
      a.mscs[i] = g_rd.I64();
      a.counts[i] = g_rd.U32();
     }
   return g_rd.End() && a.nextSeq >= 1 && a.maxFrame > TICKS_HEADER_BYTES;
  }

// ACK: u64 acked_seq, u64 credit_limit
bool ReadAck(long &acked, long &credit)
  {
   acked = g_rd.U64();
   credit = g_rd.U64();
   return g_rd.End();
  }

// RESEND: u64 from_seq
bool ReadResend(long &from)
  {
   from = g_rd.U64();
   return g_rd.End();
  }

// ERROR: u16 code, str message
bool ReadError(uint &code, string &text)
  {
   code = g_rd.U16();
   text = g_rd.Str();
   return g_rd.End();
  }

// BYE: str reason
bool ReadBye(string &reason)
  {
   reason = g_rd.Str();
   return g_rd.End();
  }

//+------------------------------------------------------------------+
//| Self-test: every byte the EA writes and reads, checked against   |
//| the test vectors of protocol.md 9 at start-up. Each is written   |
//| as TestVector("NAME", "hex"); test/bridge/ea-self-test.test.ts   |
//| extracts them and checks them against protocol.md.               |
//+------------------------------------------------------------------+
string g_vector = "";   // the vector being checked, named when it fails

string TestVector(const string name, const string hex)
  {
   g_vector = name;
   return hex;
  }

int HexNibble(const ushort c)
  {
   if(c >= '0' && c <= '9')
      return (int)(c - '0');
   if(c >= 'a' && c <= 'f')
      return (int)(c - 'a') + 10;
   return -1;
  }

// "54 53 01" -> {0x54, 0x53, 0x01}
int HexBytes(const string hex, uchar &out[])
  {
   int len = StringLen(hex);
   ArrayResize(out, len / 3 + 1);
   int n = 0;
   for(int i = 0; i + 1 < len; i++)
     {
      int hi = HexNibble(StringGetCharacter(hex, i));
      int lo = HexNibble(StringGetCharacter(hex, i + 1));
      if(hi < 0 || lo < 0)
         continue;
      out[n++] = (uchar)(hi * 16 + lo);
      i++;
     }
   ArrayResize(out, n);
   return n;
  }

// b[0, n) holds exactly the bytes of `hex`
bool SameAs(const uchar &b[], const int n, const string hex)
  {
   uchar want[];
   if(HexBytes(hex, want) != n || ArraySize(b) < n)
      return false;
   for(int i = 0; i < n; i++)
      if(b[i] != want[i])
         return false;
   return true;
  }

// Puts the vector frame at offset 3 of a buffer and checks it as ParseFrames does a frame inside
// g_rx (type, length, CRC at an offset), then loads its payload into g_rd.
bool LoadVector(const string hex, const uchar type)
  {
   uchar f[];
   int n = HexBytes(hex, f);
   uchar buf[];
   ArrayResize(buf, n + 3);
   buf[0] = 0xAA;
   buf[1] = 0xBB;
   buf[2] = 0xCC;
   ArrayCopy(buf, f, 3, 0, n);
   if(n < HEADER_BYTES || buf[3 + 3] != type)
      return false;
   int len = (int)Get32(buf, 3 + 4);
   if(len != n - HEADER_BYTES || FrameCrc(buf, 3, len) != Get32(buf, 3 + 8))
      return false;
   g_rd.Load(buf, 3 + HEADER_BYTES, len);
   return true;
  }

bool SelfTestFailed(const string why)
  {
   Log("self-test failed at vector " + g_vector + ": " + why +
       ". This EA does not speak protocol.md on this terminal build: do not use it; report the build and this log");
   return false;
  }

bool SelfTest()
  {
   uchar check[];
   StringToCharArray("123456789", check, 0, 9, CP_ACP);
   g_vector = "CRC32C check value";
   if((CrcUpdate(CRC32C_INIT, check, 0, 9) ^ CRC32C_INIT) != 0xE3069283)
      return SelfTestFailed("CRC32C(\"123456789\") is not e3069283");
   // inputs of protocol.md 9: nonce 00..1f, source demo, secret s3cret-s3cret, EURUSD (id 1, 5 digits)
   uchar nonce[];
   ArrayResize(nonce, NONCE_BYTES);
   for(int i = 0; i < NONCE_BYTES; i++)
      nonce[i] = (uchar)i;
   uchar proof[];
   g_vector = "HELLO_PROOF";
   if(!HelloProof("s3cret-s3cret", nonce, "demo", proof))
      return SelfTestFailed("CryptEncode(CRYPT_HASH_SHA256) error " + (string)GetLastError());
   if(!SameAs(proof, ArraySize(proof), TestVector("HELLO_PROOF", "f3 d0 69 94 ec 4d 36 90 7e 81 f5 78 48 54 26 17 "
          + "7a 13 98 86 f4 15 64 93 09 6a 9e 4b 03 68 d2 80")))
      return SelfTestFailed("HMAC-SHA256 proof bytes differ");
   // A key longer than the 64-byte block is hashed first (RFC 2104): bytes 0..99, same message.
   uchar key[], message[], demo[], mac[];
   ArrayResize(key, 100);
   for(int i = 0; i < 100; i++)
      key[i] = (uchar)i;
   Utf8("demo", demo);
   ArrayResize(message, NONCE_BYTES + 4);
   ArrayCopy(message, nonce, 0, 0, NONCE_BYTES);
   ArrayCopy(message, demo, NONCE_BYTES, 0, 4);
   g_vector = "HMAC_KEY_100";
   if(!HmacSha256(key, message, mac))
      return SelfTestFailed("CryptEncode(CRYPT_HASH_SHA256) error " + (string)GetLastError());
   if(!SameAs(mac, ArraySize(mac), TestVector("HMAC_KEY_100", "63 d0 84 6c e1 8e c4 d8 66 f7 cb 19 5b 1a e3 48 "
          + "11 b5 23 b7 7f 6c 2c 3f ce ca 88 8e 58 49 95 bd")))
      return SelfTestFailed("HMAC-SHA256 with a 100-byte key differs");
   // Writers. HELLO: struct size 60, build 4755, server 2020.01.02 00:00:00, GMT 2020.01.01 22:00:00
   string syms[1];
   uchar digits[1];
   syms[0] = "EURUSD";
   digits[0] = 5;
   WriteHello("demo", 60, 4755, 1577923200000, 1577916000000, syms, 1, proof);
   g_w.Finish();
   if(!SameAs(g_w.b, g_w.n, TestVector("HELLO", "54 53 01 02 46 00 00 00 b2 50 a1 0f 04 00 64 65 "
          + "6d 6f 3c 00 93 12 00 00 00 44 8d 63 6f 01 00 00 "
          + "00 67 1f 63 6f 01 00 00 01 00 06 00 45 55 52 55 "
          + "53 44 f3 d0 69 94 ec 4d 36 90 7e 81 f5 78 48 54 "
          + "26 17 7a 13 98 86 f4 15 64 93 09 6a 9e 4b 03 68 "
          + "d2 80")))
      return SelfTestFailed("HELLO frame bytes differ (field order, Str or integer writers)");
   WriteSymbols(syms, digits, 1);
   g_w.Finish();
   if(!SameAs(g_w.b, g_w.n, TestVector("SYMBOLS", "54 53 01 04 0d 00 00 00 17 59 71 f3 01 00 01 00 "
          + "05 06 00 45 55 52 55 53 44")))
      return SelfTestFailed("SYMBOLS frame bytes differ");
   // TICKS through a real MqlTick: 2020.01.02 00:00:00.065, bid 1.12120, ask 1.12172, flags 6
   MqlTick t;
   ZeroMemory(t);
   t.time = (datetime)1577923200;
   t.bid = 1.12120;
   t.ask = 1.12172;
   t.time_msc = 1577923200065;
   t.flags = 6;
   BeginTicks(1, 1, 1);
   g_vector = g_structSize == 60 ? "TICKS" : "TICKS_52";
   if(!PutTick(t))
      return SelfTestFailed("StructToCharArray error " + (string)GetLastError());
   g_w.Finish();
   if(g_structSize == 60)
     {
      if(!SameAs(g_w.b, g_w.n, TestVector("TICKS", "54 53 01 05 4a 00 00 00 2f 46 70 75 01 00 01 00 "
             + "00 00 00 00 00 00 01 00 00 00 80 32 0d 5e 00 00 "
             + "00 00 38 67 44 69 6f f0 f1 3f 51 4e b4 ab 90 f2 "
             + "f1 3f 00 00 00 00 00 00 00 00 00 00 00 00 00 00 "
             + "00 00 41 44 8d 63 6f 01 00 00 06 00 00 00 00 00 "
             + "00 00 00 00 00 00")))
         return SelfTestFailed("TICKS frame bytes differ (MqlTick layout)");
     }
   else
      if(!SameAs(g_w.b, g_w.n, TestVector("TICKS_52", "54 53 01 05 42 00 00 00 80 12 3e 52 01 00 01 00 "
             + "00 00 00 00 00 00 01 00 00 00 80 32 0d 5e 00 00 "
             + "00 00 38 67 44 69 6f f0 f1 3f 51 4e b4 ab 90 f2 "
             + "f1 3f 00 00 00 00 00 00 00 00 00 00 00 00 00 00 "
             + "00 00 41 44 8d 63 6f 01 00 00 06 00 00 00")))
         return SelfTestFailed("TICKS frame bytes differ (52-byte MqlTick layout)");
   WriteHeartbeat(1577923201000, 1577916001000);
   g_w.Finish();
   if(!SameAs(g_w.b, g_w.n, TestVector("HEARTBEAT", "54 53 01 06 10 00 00 00 9e 43 57 ad e8 47 8d 63 "
          + "6f 01 00 00 e8 6a 1f 63 6f 01 00 00")))
      return SelfTestFailed("HEARTBEAT frame bytes differ");
   // Readers, each frame checked (type, length, CRC) at an offset inside a buffer
   uint minV = 0, maxV = 0;
   uchar gotNonce[];
   if(!LoadVector(TestVector("CHALLENGE", "54 53 01 01 22 00 00 00 5a 0e 3d e3 00 01 02 03 "
          + "04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 "
          + "14 15 16 17 18 19 1a 1b 1c 1d 1e 1f 01 01"), MSG_CHALLENGE))
      return SelfTestFailed("frame header or CRC check at an offset");
   if(!ReadChallenge(gotNonce, minV, maxV) || minV != 1 || maxV != 1 || ArraySize(gotNonce) != NONCE_BYTES)
      return SelfTestFailed("CHALLENGE decodes wrong");
   for(int i = 0; i < NONCE_BYTES; i++)
      if(gotNonce[i] != nonce[i])
         return SelfTestFailed("CHALLENGE nonce decodes wrong");
   HelloAck a;
   if(!LoadVector(TestVector("HELLO_ACK", "54 53 01 03 38 00 00 00 ea 52 8c 29 01 00 00 00 "
          + "00 00 00 00 01 00 01 00 00 00 00 00 e8 03 00 00 "
          + "98 3a 00 00 00 00 10 00 00 40 00 00 00 04 01 00 "
          + "06 00 45 55 52 55 53 44 18 40 8d 63 6f 01 00 00 "
          + "02 00 00 00"), MSG_HELLO_ACK))
      return SelfTestFailed("frame header or CRC check at an offset");
   if(!ReadHelloAck(a) || a.n != 1)
      return SelfTestFailed("HELLO_ACK does not decode");
   if(a.nextSeq != 1 || a.credit != 65537 || a.hbInterval != 1000 || a.hbTimeout != 15000 ||
      a.maxFrame != 1048576 || a.maxTicks != 16384 || a.maxSymbols != 1024 ||
      a.names[0] != "EURUSD" || a.mscs[0] != 1577923199000 || a.counts[0] != 2)
      return SelfTestFailed("HELLO_ACK fields decode wrong");
   long acked = 0, credit = 0, from = 0;
   if(!LoadVector(TestVector("ACK", "54 53 01 07 10 00 00 00 ae 38 65 b9 01 00 00 00 "
          + "00 00 00 00 02 00 01 00 00 00 00 00"), MSG_ACK))
      return SelfTestFailed("frame header or CRC check at an offset");
   if(!ReadAck(acked, credit) || acked != 1 || credit != 65538)
      return SelfTestFailed("ACK decodes wrong");
   if(!LoadVector(TestVector("RESEND", "54 53 01 08 08 00 00 00 bd 1f 73 15 2a 00 00 00 "
          + "00 00 00 00"), MSG_RESEND))
      return SelfTestFailed("frame header or CRC check at an offset");
   if(!ReadResend(from) || from != 42)
      return SelfTestFailed("RESEND decodes wrong");
   uint code = 0;
   string text = "";
   if(!LoadVector(TestVector("ERROR", "54 53 01 09 0d 00 00 00 26 c4 0b 82 0e 00 09 00 "
          + "62 61 64 20 70 72 6f 6f 66"), MSG_ERROR))
      return SelfTestFailed("frame header or CRC check at an offset");
   if(!ReadError(code, text) || code != TS_ERR_AUTH || text != "bad proof")
      return SelfTestFailed("ERROR decodes wrong");
   if(!LoadVector(TestVector("BYE", "54 53 01 0a 0a 00 00 00 48 52 b6 5f 08 00 73 68 "
          + "75 74 64 6f 77 6e"), MSG_BYE))
      return SelfTestFailed("frame header or CRC check at an offset");
   if(!ReadBye(text) || text != "shutdown")
      return SelfTestFailed("BYE decodes wrong");
   g_vector = "";
   return true;
  }

//+------------------------------------------------------------------+
//| Init / deinit                                                    |
//+------------------------------------------------------------------+
bool ValidSource(const string s)
  {
   int n = StringLen(s);
   if(n < 1 || n > 64)
      return false;
   for(int i = 0; i < n; i++)
     {
      ushort c = StringGetCharacter(s, i);
      bool okc = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
      if(!okc)
         return false;
     }
   return true;
  }

// Parses InpSymbols. Selecting them may fail while the terminal is still connecting to its broker:
// that is retried by WarmUp, not a reason to remove the EA.
// InpBridge "host:port,host:port" (or InpHost:InpPort when empty) into g_bridgeHost/g_bridgePort.
bool LoadBridges()
  {
   ArrayFree(g_bridgeHost);
   ArrayFree(g_bridgePort);
   g_nbridge = 0;
   g_bridgeNext = 0;
   g_bridgeList = "";
   string items[];
   int n = 0;
   if(StringLen(InpBridge) == 0)
     {
      ArrayResize(items, 1);
      items[0] = InpHost + ":" + (string)InpPort;
      n = 1;
     }
   else
      n = StringSplit(InpBridge, ',', items);
   for(int i = 0; i < n; i++)
     {
      string item = items[i];
      StringTrimLeft(item);
      StringTrimRight(item);
      int colon = -1;
      for(int at = StringFind(item, ":"); at >= 0; at = StringFind(item, ":", at + 1))
         colon = at;
      long port = colon > 0 ? StringToInteger(StringSubstr(item, colon + 1)) : 0;
      if(colon < 1 || port < 1 || port > 65535)
        {
         Log("InpBridge: '" + item + "' is not host:port (port 1-65535); give host:port,host:port");
         return false;
        }
      ArrayResize(g_bridgeHost, g_nbridge + 1);
      ArrayResize(g_bridgePort, g_nbridge + 1);
      g_bridgeHost[g_nbridge] = StringSubstr(item, 0, colon);
      g_bridgePort[g_nbridge] = (uint)port;
      g_bridgeList += (g_nbridge > 0 ? "," : "") + item;
      g_nbridge++;
     }
   if(g_nbridge == 0)
     {
      Log("InpBridge lists no bridge: give host:port,host:port");
      return false;
     }
   g_host = g_bridgeHost[0];
   g_port = g_bridgePort[0];
   return true;
  }

bool LoadSymbols()
  {
   string list = InpSymbols;
   StringTrimLeft(list);
   StringTrimRight(list);
   if(StringLen(list) == 0)
      list = _Symbol;
   string parts[];
   int n = StringSplit(list, StringGetCharacter(",", 0), parts);
   g_nsym = 0;
   for(int i = 0; i < n; i++)
     {
      string s = parts[i];
      StringTrimLeft(s);
      StringTrimRight(s);
      if(StringLen(s) == 0)
         continue;
      bool dup = false;
      for(int j = 0; j < g_nsym; j++)
         if(g_sym[j] == s)
            dup = true;
      if(dup)
         continue;
      uchar u[];
      int bytes = Utf8(s, u);
      if(bytes > MAX_NAME_BYTES)
        {
         Log("symbol name " + s + " is longer than 64 bytes");
         return false;
        }
      g_nsym++;
      ArrayResize(g_sym, g_nsym);
      g_sym[g_nsym - 1] = s;
     }
   if(g_nsym == 0 || g_nsym > 65535)
     {
      Log("InpSymbols names no usable symbol");
      return false;
     }
   if(g_nsym > 1024)
      Log("warning: " + (string)g_nsym + " symbols; the bridge accepts 1024 per session by default (max_symbols)");
   ArrayResize(g_digits, g_nsym);
   ArrayResize(g_curMsc, g_nsym);
   ArrayResize(g_curCount, g_nsym);
   ArrayResize(g_span, g_nsym);
   ArrayResize(g_warnAt, g_nsym);
   ArrayResize(g_needLive, g_nsym);
   ArrayResize(g_originMsc, g_nsym);
   ArrayResize(g_originCount, g_nsym);
   ArrayResize(g_hasOrigin, g_nsym);
   // A plain loop: ArrayInitialize has no ulong overload (g_warnAt).
   for(int k = 0; k < g_nsym; k++)
     {
      g_digits[k] = 0;
      g_curMsc[k] = 0;
      g_curCount[k] = 0;
      g_span[k] = 0;
      g_warnAt[k] = 0;
      g_needLive[k] = false;
      g_originMsc[k] = 0;
      g_originCount[k] = 0;
      g_hasOrigin[k] = false;
     }
   return true;
  }

// Globals survive a parameter or chart change (OnDeinit + OnInit without unloading): reset all.
void ResetState()
  {
   g_source = InpSource;
   g_tls = InpTls || InpPort == 443;
   g_sock = INVALID_HANDLE;
   g_state = ST_OFFLINE;
   g_fatal = false;
   g_amnesia = true;
   g_warm = 0;
   g_warmTries = 0;
   g_capFrom = 0;
   g_head = 0;
   g_bufStart = 1;
   g_nextSeq = 1;
   g_nextSend = 1;
   g_credit = 0;
   g_nextConnectAt = 0;
   g_hbWaitSince = 0;
   g_rxLen = 0;
   g_backoffMs = InpBackoffMinMs;
   g_maxFrameBytes = DEFAULT_MAX_FRAME;
   g_ackedSeq = 0;
   g_sentTicks = 0;
   g_captured = 0;
   g_connects = 0;
   ArrayFree(g_rx);
   ArrayFree(g_ticks);
  }

int OnInit()
  {
   ResetState();
   if(MQLInfoInteger(MQL_TESTER))
     {
      Log("socket functions do not work in the Strategy Tester: attach the EA to a live chart");
      return INIT_FAILED;
     }
   g_structSize = sizeof(MqlTick);
   if(g_structSize != 60 && g_structSize != 52)
     {
      Log("sizeof(MqlTick) is " + (string)g_structSize + "; the protocol knows 60 and 52: update the EA");
      return INIT_FAILED;
     }
   if(!ValidSource(InpSource))
     {
      Log("InpSource must be 1-64 characters of A-Z a-z 0-9 . _ - , unique per terminal, and the id the bridge's sourceSecrets uses");
      return INIT_PARAMETERS_INCORRECT;
     }
   if(InpPort < 1 || InpPort > 65535 || InpTimerMs < 1 || InpMaxBufferTicks < 1 || InpMaxTicksPerFrame < 1 ||
      InpMaxFrameBytes < TICKS_HEADER_BYTES + g_structSize ||
      InpHeartbeatMs < 0 || InpBackoffMinMs < 1 || InpBackoffMaxMs < InpBackoffMinMs)
     {
      Log("invalid input: port 1-65535, timer/buffer/frame/backoff >= 1, InpMaxFrameBytes >= " + (string)(TICKS_HEADER_BYTES + g_structSize) +
          ", InpBackoffMaxMs >= InpBackoffMinMs, InpHeartbeatMs >= 0");
      return INIT_PARAMETERS_INCORRECT;
     }
   if(!LoadBridges() || !LoadSymbols())
      return INIT_PARAMETERS_INCORRECT;
   CrcInit();
   if(!SelfTest())
     {
      Alert("TickStream: start-up self-test failed at vector " + g_vector + " (see the Experts log)");
      return INIT_FAILED;
     }
   g_cap = InpMaxBufferTicks;
   if(ArrayResize(g_ring, g_cap) != g_cap || ArrayResize(g_ringSym, g_cap) != g_cap)
     {
      Log("cannot allocate a buffer of " + (string)g_cap + " ticks: lower InpMaxBufferTicks");
      return INIT_FAILED;
     }
   if(StringLen(InpSecret) == 0)
      Log("InpSecret is empty: only a bridge without sourceSecrets accepts this EA");
   // Selecting a symbol into Market Watch starts its quotes and history download now; the
   // blocking sync reads wait for the timer (WarmUp), and a failure here is retried there.
   for(int k = 0; k < g_nsym; k++)
      SymbolSelect(g_sym[k], true);
   MathSrand((uint)GetTickCount());
   if(!EventSetMillisecondTimer(InpTimerMs))
     {
      Log("EventSetMillisecondTimer failed, error " + (string)GetLastError());
      return INIT_FAILED;
     }
   Log(StringFormat("%d symbol(s), MqlTick %d bytes, terminal build %d, bridge %s%s",
                    g_nsym, g_structSize, (int)TerminalInfoInteger(TERMINAL_BUILD), g_bridgeList, InpTls ? " (TLS)" : ""));
   return INIT_SUCCEEDED;
  }

void OnDeinit(const int reason)
  {
   EventKillTimer();
   if(g_sock != INVALID_HANDLE)
     {
      // Orderly close when the socket has room; whatever is un-ACKed is re-read from history by
      // the next run (protocol.md 4, 5.7). A dead peer must not hold the terminal here.
      g_w.Begin(MSG_BYE);
      g_w.Str("EA stopped (deinit reason " + (string)reason + ")");
      SendCourtesy();
      SocketClose(g_sock);
      g_sock = INVALID_HANDLE;
     }
   g_state = ST_OFFLINE;
   Comment("");
   Log("stopped (deinit reason " + (string)reason + "), " + (string)(g_nextSeq - g_bufStart) + " un-ACKed ticks left to history");
  }

//+------------------------------------------------------------------+
//| Timer: warm up, read, cursors, capture, send, heartbeat, connect |
//+------------------------------------------------------------------+
// Nothing that can block for long runs while a handshake is pending: capture only while
// streaming or offline, new cursors after SYMBOLS within a time budget, and the connect attempt
// last, so the events that follow only read until HELLO_ACK (issue 19; timers in docs/ea.md).
void OnTimer()
  {
   if(g_fatal)
      return;
   if(g_warm < g_nsym)
     {
      WarmUp();
      ShowStatus();
      return;
     }
   if(g_sock != INVALID_HANDLE)
     {
      if(!Receive())
         Drop("connection lost (error " + (string)GetLastError() + ")");
      else
         CheckTimeouts();
     }
   if(g_state == ST_READY)
      PrepareCursors();
   if(g_state == ST_READY || g_state == ST_OFFLINE)
      Capture();
   Pump();
   if(g_state == ST_READY && GetTickCount64() - g_lastSentAt >= (ulong)g_hbIntervalMs)
      SendHeartbeat();
   if(g_sock == INVALID_HANDLE && !g_fatal && GetTickCount64() >= g_nextConnectAt)
      Connect();
   ShowStatus();
  }

// Before the first connection, one symbol per timer event: select it and read its newest tick.
// In an EA, CopyTicks waits (up to 45 s, MQL5 reference) while the terminal syncs the symbol's
// tick history; with no session open yet, nothing on the bridge times out meanwhile.
void WarmUp()
  {
   int k = g_warm;
   string sym = g_sym[k];
   ulong now = GetTickCount64();
   if(!SymbolSelect(sym, true))
     {
      if(now - g_warnAt[k] > WARN_EVERY_MS)
        {
         g_warnAt[k] = now;
         Log("symbol " + sym + " cannot be selected (SymbolSelect error " + (string)GetLastError() +
             "): is the terminal connected to its broker, and does the broker offer it? Retrying; check InpSymbols");
        }
      return;
     }
   g_digits[k] = (uchar)SymbolInfoInteger(sym, SYMBOL_DIGITS);
   ResetLastError();
   int got = CopyTicks(sym, g_ticks, COPY_TICKS_ALL, 0, 1);
   int err = GetLastError();
   if(got < 0 || err == ERR_HISTORY_TIMEOUT)
     {
      if(++g_warmTries < WARMUP_TRIES)
        {
         Log(sym + ": tick history not synchronised yet (CopyTicks " + (string)got + ", error " + (string)err + "): retrying");
         return;
        }
      // Capture retries such a symbol on every poll; the other symbols need not wait for it.
      Log(sym + ": tick history still not synchronised after " + (string)WARMUP_TRIES + " reads: connecting anyway");
     }
   g_warmTries = 0;
   g_warm++;
   if(g_warm == g_nsym)
      Log("tick history of " + (string)g_nsym + " symbol(s) read: connecting");
  }

// Live starts for symbols the bridge has no cursor of, after SYMBOLS went out, within a time
// budget per timer event (the session is open and heartbeats between events).
void PrepareCursors()
  {
   ulong start = GetTickCount64();
   for(int k = 0; k < g_nsym; k++)
     {
      if(!g_needLive[k])
         continue;
      if(GetTickCount64() - start > CAPTURE_BUDGET_MS)
         return;
      if(!LiveCursor(k))
         continue;
      g_needLive[k] = false;
      g_originMsc[k] = g_curMsc[k];
      g_originCount[k] = g_curCount[k];
      g_hasOrigin[k] = true;
      Log(g_sym[k] + ": no cursor on the bridge, starting live at " + MscToString(g_curMsc[k]));
     }
  }

//+------------------------------------------------------------------+
//| Capture (bridge/capture.ts poll)                                 |
//+------------------------------------------------------------------+
void Capture()
  {
   // An EA without memory does not capture before HELLO_ACK says where it stands.
   if(g_amnesia || g_fatal)
      return;
   ulong start = GetTickCount64();
   for(int i = 0; i < g_nsym; i++)
     {
      int k = (g_capFrom + i) % g_nsym;
      long room = g_cap - (g_nextSeq - g_bufStart);
      if(room <= 0)
         break;   // full: capture pauses, cursors hold, nothing is evicted
      if(g_needLive[k])
         continue;
      if(i > 0 && GetTickCount64() - start > CAPTURE_BUDGET_MS)
        {
         // A slow CopyTicksRange (history download) used the budget: the rest go first next time.
         g_capFrom = k;
         return;
        }
      CaptureSymbol(k, room);
     }
  }

void CaptureSymbol(const int k, const long room)
  {
   string sym = g_sym[k];
   long from = g_curMsc[k];
   // Catch-up in time windows: an open-ended CopyTicksRange after a long outage would copy the
   // whole backlog on every poll. A window returns a prefix of the same ticks, so which ticks
   // are taken, and in what order, is unchanged.
   MqlTick last;
   long newest = SymbolInfoTick(sym, last) ? last.time_msc : 0;
   if(g_span[k] == 0 && newest - from > CATCHUP_SPAN_MS)
      g_span[k] = CATCHUP_SPAN_MS;
   ulong to = 0;   // 0: up to the newest tick
   if(g_span[k] > 0)
     {
      if(from + g_span[k] >= newest)
         g_span[k] = 0;
      else
         to = (ulong)(from + g_span[k]);
     }
   ResetLastError();
   int got = CopyTicksRange(sym, g_ticks, COPY_TICKS_ALL, (ulong)from, to);
   int err = GetLastError();
   if(got < 0 || err == ERR_HISTORY_TIMEOUT)
     {
      // Not synchronised yet: a partial answer may have holes. Take nothing, retry next poll.
      ulong now = GetTickCount64();
      if(now - g_warnAt[k] > WARN_EVERY_MS)
        {
         g_warnAt[k] = now;
         Log(sym + ": CopyTicksRange from " + MscToString(from) + " returned " + (string)got + ", error " + (string)err + " (tick history still synchronising?): retrying");
        }
      return;
     }
   // Both ends are inclusive: skip the ticks of the cursor's millisecond already taken.
   int i = 0;
   int skip = g_curCount[k];
   while(skip > 0 && i < got && g_ticks[i].time_msc == from)
     {
      i++;
      skip--;
     }
   int avail = got - i;
   int take = (int)MinL(avail, room);
   for(int j = i; j < i + take; j++)
     {
      int slot = Slot(g_nextSeq);
      g_ring[slot] = g_ticks[j];
      g_ringSym[slot] = (ushort)k;
      g_nextSeq++;   // the seq is given here, once (protocol.md 5.1)
      if(g_ticks[j].time_msc == g_curMsc[k])
         g_curCount[k]++;
      else
        {
         g_curMsc[k] = g_ticks[j].time_msc;
         g_curCount[k] = 1;
        }
     }
   g_captured += take;
   if(g_span[k] > 0)
     {
      if(avail > 4 * room && g_span[k] > 1)
         g_span[k] /= 2;      // the window holds far more than fits: narrow it
      else
         if(avail < room)
            g_span[k] *= 2;   // drained: widen it (open-ended again once it reaches the newest tick)
     }
  }

// A symbol the journal has no cursor for starts live (protocol.md 5.7): after the newest tick.
// False when its history cannot be read yet (tried again on the next timer event).
bool LiveCursor(const int k)
  {
   MqlTick last;
   if(SymbolInfoTick(g_sym[k], last) && last.time_msc > 0)
     {
      ResetLastError();
      int n = CopyTicksRange(g_sym[k], g_ticks, COPY_TICKS_ALL, (ulong)last.time_msc, (ulong)last.time_msc);
      int err = GetLastError();
      if(n < 0 || err == ERR_HISTORY_TIMEOUT)
        {
         // Counting 0 ticks of that ms would take the ones before "live" too; waiting costs nothing.
         ulong now = GetTickCount64();
         if(now - g_warnAt[k] > WARN_EVERY_MS)
           {
            g_warnAt[k] = now;
            Log(g_sym[k] + ": cannot read its newest millisecond yet (error " + (string)err + "): retrying");
           }
         return false;
        }
      g_curMsc[k] = last.time_msc;
      g_curCount[k] = n;
     }
   else
     {
      g_curMsc[k] = ServerMs();
      g_curCount[k] = 0;
     }
   return true;
  }

// Frees buffered ticks up to and including seq (capture.ts ack).
void AckUpTo(const long seq)
  {
   long upTo = MinL(seq + 1, g_nextSeq);
   if(upTo <= g_bufStart)
      return;
   g_head = (int)((g_head + (upTo - g_bufStart)) % g_cap);
   g_bufStart = upTo;
   if(g_nextSend < g_bufStart)
      g_nextSend = g_bufStart;
  }

//+------------------------------------------------------------------+
//| Connection                                                       |
//+------------------------------------------------------------------+
void Connect()
  {
   g_connects++;
   // A pool is tried in turn: a dead bridge's sources go to the next one (each bridge claims a
   // source at HELLO and resumes it where the journal stands).
   g_host = g_bridgeHost[g_bridgeNext];
   g_port = g_bridgePort[g_bridgeNext];
   g_bridgeNext = (g_bridgeNext + 1) % g_nbridge;
   g_tls = InpTls || g_port == 443;
   ResetLastError();
   g_sock = SocketCreate();
   if(g_sock == INVALID_HANDLE)
     {
      Log("SocketCreate failed, error " + (string)GetLastError());
      ScheduleReconnect();
      return;
     }
   if(!SocketConnect(g_sock, g_host, g_port, CONNECT_TIMEOUT_MS))
     {
      Log(StringFormat("cannot connect to %s:%u, error %d: is the bridge running, and is %s in Tools > Options > Expert Advisors, allowed URLs?",
                       g_host, g_port, GetLastError(), g_host));
      CloseSocket();
      ScheduleReconnect();
      return;
     }
   SocketTimeouts(g_sock, SOCKET_TIMEOUT_MS, SOCKET_TIMEOUT_MS);
   if(g_tls)
     {
      // Verified against the terminal's (Windows) certificate store only; no CA file, no pinning.
      // On port 443 the terminal has done the handshake itself (MQL5 reference, SocketTlsHandshake).
      if(g_port != 443 && !SocketTlsHandshake(g_sock, g_host))
        {
         Log("TLS handshake with " + g_host + " failed, error " + (string)GetLastError() + ": is the bridge's certificate trusted by Windows and issued for this host name?");
         CloseSocket();
         ScheduleReconnect();
         return;
        }
      string subject, issuer, serial, thumb;
      datetime expiry;
      if(SocketTlsCertificate(g_sock, subject, issuer, serial, thumb, expiry))
         Log("TLS: " + subject + ", issued by " + issuer + ", expires " + TimeToString(expiry));
     }
   g_state = ST_CHALLENGE;
   g_stateSince = GetTickCount64();
   g_rxLen = 0;
   g_hbWaitSince = 0;
   Log("connected to " + g_host + ":" + (string)g_port + ", waiting for CHALLENGE");
  }

void CloseSocket()
  {
   if(g_sock != INVALID_HANDLE)
      SocketClose(g_sock);
   g_sock = INVALID_HANDLE;
   g_state = ST_OFFLINE;
   g_rxLen = 0;
  }

// Capped exponential backoff with jitter (x0.5 to x1.5, as bridge/client.ts).
void ScheduleReconnect()
  {
   double jitter = 0.5 + MathRand() / 32767.0;
   ulong delay = (ulong)(g_backoffMs * jitter);   // up to 1.5 x an int: kept in a ulong
   g_nextConnectAt = GetTickCount64() + delay;
   // Doubling past 2^30 would overflow an int: stop at the cap first.
   g_backoffMs = g_backoffMs >= InpBackoffMaxMs / 2 ? InpBackoffMaxMs : g_backoffMs * 2;
   Log("next connection attempt in " + (string)delay + " ms");
  }

// Connection over; everything un-ACKed is kept and resent on the next session (protocol.md 5.6).
void Drop(const string why)
  {
   CloseSocket();
   Log("disconnected: " + why + "; " + (string)(g_nextSeq - g_bufStart) + " un-ACKed ticks kept");
   if(!g_fatal)
      ScheduleReconnect();
  }

// A person must fix the configuration (ERR_AUTH, ERR_STRUCT_SIZE, version): stop retrying.
void Fatal(const string why)
  {
   g_fatal = true;
   CloseSocket();
   Log("STOPPED: " + why);
   Alert("TickStream: " + why);
   Comment("TickStream STOPPED: " + why);
  }

// We saw a framing or state error in what the bridge sent: tell it, then reconnect.
void ProtocolFail(const uint code, const string why)
  {
   g_w.Begin(MSG_ERROR);
   g_w.U16(code);
   g_w.Str(StringSubstr(why, 0, MAX_TEXT_CHARS));
   SendCourtesy();
   if(code == TS_ERR_FRAME_VERSION)
      Fatal(why);
   else
      Drop(why);
  }

void CheckTimeouts()
  {
   ulong now = GetTickCount64();
   if((g_state == ST_CHALLENGE || g_state == ST_HELLO_ACK) && now - g_stateSince > HANDSHAKE_TIMEOUT_MS)
      Drop("no answer to the handshake within " + (string)HANDSHAKE_TIMEOUT_MS + " ms (" + g_stateNames[g_state] + ")");
   else
      if(g_state == ST_READY && g_hbWaitSince > 0 && now - g_hbWaitSince > (ulong)g_hbTimeoutMs)
         Drop("the bridge sent nothing for " + (string)g_hbTimeoutMs + " ms after a HEARTBEAT");
  }

//+------------------------------------------------------------------+
//| Sending                                                          |
//+------------------------------------------------------------------+
// SocketSend always sends from index 0: a partial write is finished from a copy of the rest.
bool SendAll(const uchar &buf[], const int len)
  {
   int done = 0;
   uchar rest[];
   while(done < len)
     {
      int n;
      ResetLastError();
      if(done == 0)
         n = g_tls ? SocketTlsSend(g_sock, buf, (uint)len) : SocketSend(g_sock, buf, (uint)len);
      else
        {
         ArrayResize(rest, len - done);
         ArrayCopy(rest, buf, 0, done, len - done);
         n = g_tls ? SocketTlsSend(g_sock, rest, (uint)(len - done)) : SocketSend(g_sock, rest, (uint)(len - done));
        }
      if(n <= 0)
         return false;   // -1, error 5273: the peer is gone
      done += n;
     }
   return true;
  }

// A last frame (BYE, ERROR) to a peer that may be gone or not reading: sent only if the socket
// has room, with short timeouts, so it cannot hold OnDeinit or OnTimer the 10 s SendAll may wait.
void SendCourtesy()
  {
   g_w.Finish();
   if(g_sock == INVALID_HANDLE || !SocketIsConnected(g_sock) || !SocketIsWritable(g_sock))
      return;
   SocketTimeouts(g_sock, COURTESY_TIMEOUT_MS, COURTESY_TIMEOUT_MS);
   SendAll(g_w.b, g_w.n);
  }

bool SendFrame()
  {
   g_w.Finish();
   if(!SendAll(g_w.b, g_w.n))
     {
      Drop("send failed, error " + (string)GetLastError());
      return false;
     }
   g_lastSentAt = GetTickCount64();
   return true;
  }

// TICKS from g_nextSend: one symbol per frame, within credit, frame and time limits (client.ts pump).
// At most IN_FLIGHT_FRAMES capped frames' worth of ticks are sent and not yet ACKed: that much
// always fits the two socket buffers between us and a bridge that stopped reading, so SocketSend
// never blocks into its timeout and backpressure never becomes a reconnect (issue 19).
void Pump()
  {
   if(g_state != ST_READY)
      return;
   long limit = MinL(g_credit, g_ackedSeq + 1 + (long)IN_FLIGHT_FRAMES * g_maxTicksFrame);
   ulong start = GetTickCount64();
   while(g_sock != INVALID_HANDLE && g_nextSend < g_nextSeq && g_nextSend < limit)
     {
      if(GetTickCount64() - start > PUMP_BUDGET_MS)
         break;
      if(!SocketIsWritable(g_sock))
         break;   // never block in SocketSend: try again next timer event
      long first = g_nextSend;
      ushort sym = g_ringSym[Slot(first)];
      long maxN = MinL(MinL((long)g_maxTicksFrame, limit - first), g_nextSeq - first);
      long n = 1;
      while(n < maxN && g_ringSym[Slot(first + n)] == sym)
         n++;
      BeginTicks((uint)sym + 1, first, n);
      for(long s = first; s < first + n; s++)
         if(!PutTick(g_ring[Slot(s)]))
           {
            Drop("StructToCharArray failed, error " + (string)GetLastError());
            return;
           }
      if(!SendFrame())
         return;
      g_nextSend = first + n;
      g_sentTicks += n;
     }
  }

void SendHeartbeat()
  {
   // HEARTBEAT: i64 server_time_ms, i64 gmt_time_ms, read together
   WriteHeartbeat(ServerMs(), GmtMs());
   if(SendFrame() && g_hbWaitSince == 0)
      g_hbWaitSince = GetTickCount64();
  }

//+------------------------------------------------------------------+
//| Receiving: non-blocking reads, then whole frames                 |
//+------------------------------------------------------------------+
// False when the connection is gone.
bool Receive()
  {
   uchar chunk[];
   for(int pass = 0; pass < 16 && g_sock != INVALID_HANDLE; pass++)
     {
      ArrayResize(chunk, 0);
      int got;
      ResetLastError();
      if(g_tls)
         got = SocketTlsReadAvailable(g_sock, chunk, READ_CHUNK);   // never waits; 0 = nothing yet
      else
        {
         // SocketIsReadable may say 1 when nothing is there; the 1 ms read then times out.
         uint avail = SocketIsReadable(g_sock);
         if(avail == 0)
           {
            if(GetLastError() != 0 || !SocketIsConnected(g_sock))
               return false;
            break;
           }
         got = SocketRead(g_sock, chunk, (uint)MinI((int)avail, READ_CHUNK), 1);
        }
      // Even a failed read may have delivered bytes that arrived before the close.
      int n = got > 0 ? got : ArraySize(chunk);
      if(n > 0)
        {
         if(ArraySize(g_rx) < g_rxLen + n)
            ArrayResize(g_rx, g_rxLen + n, READ_CHUNK);
         ArrayCopy(g_rx, chunk, g_rxLen, 0, n);
         g_rxLen += n;
         ParseFrames();
        }
      if(got < 0)
        {
         if(g_sock != INVALID_HANDLE && !SocketIsConnected(g_sock))
            return false;
         break;
        }
      if(got == 0)
         break;
     }
   return true;
  }

// Checks, in protocol.md 2 order: magic, version, type, length; then the CRC once whole.
void ParseFrames()
  {
   int off = 0;
   int limit = MaxI(DEFAULT_MAX_FRAME, g_maxFrameBytes);
   while(g_sock != INVALID_HANDLE && g_rxLen - off >= HEADER_BYTES)
     {
      uint magic = (uint)g_rx[off] | ((uint)g_rx[off + 1] << 8);
      if(magic != FRAME_MAGIC)
        {
         ProtocolFail(TS_ERR_FRAME_MAGIC, StringFormat("bad frame magic 0x%04x from the bridge", magic));
         return;
        }
      if(g_rx[off + 2] != PROTO_VERSION)
        {
         ProtocolFail(TS_ERR_FRAME_VERSION, StringFormat("the bridge sent protocol version %d; this EA speaks %d: update one side", g_rx[off + 2], PROTO_VERSION));
         return;
        }
      uchar type = g_rx[off + 3];
      if(type < MSG_CHALLENGE || type > MSG_BYE)
        {
         ProtocolFail(TS_ERR_FRAME_TYPE, StringFormat("unknown message type %d from the bridge", type));
         return;
        }
      uint len = Get32(g_rx, off + 4);
      if(len > (uint)limit)
        {
         ProtocolFail(TS_ERR_FRAME_TOO_LARGE, StringFormat("frame of %u bytes from the bridge is over %d", len, limit));
         return;
        }
      if(g_rxLen - off < HEADER_BYTES + (int)len)
         break;   // the rest has not arrived yet
      if(FrameCrc(g_rx, off, (int)len) != Get32(g_rx, off + 8))
        {
         ProtocolFail(TS_ERR_FRAME_CRC, "frame checksum mismatch on a frame from the bridge");
         return;
        }
      g_rd.Load(g_rx, off + HEADER_BYTES, (int)len);
      off += HEADER_BYTES + (int)len;
      g_hbWaitSince = 0;   // the bridge is alive
      OnFrame(type);
     }
   if(g_sock == INVALID_HANDLE)
     {
      g_rxLen = 0;
      return;
     }
   int rest = g_rxLen - off;
   if(off > 0 && rest > 0)
     {
      uchar tmp[];
      ArrayCopy(tmp, g_rx, 0, off, rest);
      ArrayCopy(g_rx, tmp, 0, 0, rest);
     }
   g_rxLen = rest;
  }

void OnFrame(const uchar type)
  {
   switch(type)
     {
      case MSG_CHALLENGE:
         if(g_state != ST_CHALLENGE)
            ProtocolFail(TS_ERR_PROTOCOL_STATE, "CHALLENGE out of turn");
         else
            OnChallenge();
         break;
      case MSG_HELLO_ACK:
         if(g_state != ST_HELLO_ACK)
            ProtocolFail(TS_ERR_PROTOCOL_STATE, "HELLO_ACK out of turn");
         else
            OnHelloAck();
         break;
      case MSG_ACK:
         // The bridge may ACK the previous connection's ticks between HELLO and HELLO_ACK.
         if(g_state != ST_READY && g_state != ST_HELLO_ACK)
            ProtocolFail(TS_ERR_PROTOCOL_STATE, "ACK before HELLO");
         else
            OnAck();
         break;
      case MSG_RESEND:
         if(g_state != ST_READY)
            ProtocolFail(TS_ERR_PROTOCOL_STATE, "RESEND before HELLO_ACK");
         else
            OnResend();
         break;
      case MSG_ERROR:
         OnError();
         break;
      case MSG_BYE:
        {
         string reason = "";
         ReadBye(reason);
         Drop("the bridge said BYE: " + reason);
         break;
        }
      default:
         ProtocolFail(TS_ERR_PROTOCOL_STATE, StringFormat("the bridge sent message type %d, which only an EA sends", type));
     }
  }

// CHALLENGE -> HELLO
void OnChallenge()
  {
   uchar nonce[];
   uint minV = 0, maxV = 0;
   if(!ReadChallenge(nonce, minV, maxV))
     {
      ProtocolFail(TS_ERR_FRAME_PAYLOAD, "malformed CHALLENGE");
      return;
     }
   if((uint)PROTO_VERSION < minV || (uint)PROTO_VERSION > maxV)
     {
      g_w.Begin(MSG_BYE);
      g_w.Str("unsupported protocol version");
      SendCourtesy();
      Fatal(StringFormat("the bridge accepts protocol versions %u-%u, this EA speaks %d: update the EA or the bridge", minV, maxV, PROTO_VERSION));
      return;
     }
   uchar proof[];
   if(!HelloProof(InpSecret, nonce, g_source, proof))
     {
      Fatal("cannot compute the HELLO proof: CryptEncode error " + (string)GetLastError());
      return;
     }
   WriteHello(g_source, g_structSize, (uint)TerminalInfoInteger(TERMINAL_BUILD), ServerMs(), GmtMs(), g_sym, g_nsym, proof);
   if(!SendFrame())
      return;
   g_state = ST_HELLO_ACK;
   g_stateSince = GetTickCount64();
  }

// HELLO_ACK: adopt or continue, size frames, send SYMBOLS. Nothing here reads history: cursors
// of symbols the bridge has none of are set by PrepareCursors once the session streams.
void OnHelloAck()
  {
   HelloAck a;
   if(!ReadHelloAck(a))
     {
      ProtocolFail(TS_ERR_FRAME_PAYLOAD, "malformed HELLO_ACK");
      return;
     }
   if((uint)g_nsym > a.maxSymbols)
     {
      Fatal(StringFormat("InpSymbols lists %d symbols and the bridge accepts %u per session (max_symbols): list fewer, or raise the bridge's limit",
                         g_nsym, a.maxSymbols));
      return;
     }
   bool adopt = g_amnesia;
   if(!adopt && (a.nextSeq < g_bufStart || a.nextSeq > g_nextSeq))
     {
      // The journal lost ticks it had ACKed, or holds seqs this EA never sent (another terminal
      // with the same InpSource?). Either way our numbering no longer matches: resume from the
      // bridge's state as after a restart; history fills in whatever the journal lacks.
      Log(StringFormat("the bridge expects seq %s but this EA holds %s..%s: resuming from the bridge's cursors (is InpSource unique?)",
                       (string)a.nextSeq, (string)g_bufStart, (string)(g_nextSeq - 1)));
      adopt = true;
     }
   if(adopt)
     {
      // New ticks are numbered from next_seq, history re-read from each cursor (protocol.md 5.7).
      // Without a bridge cursor: back to where this run started the symbol (its origin), never
      // "live" again, which would skip what was captured but not committed (capture.ts resume).
      g_nextSeq = a.nextSeq;
      g_bufStart = a.nextSeq;
      g_head = 0;
      for(int k = 0; k < g_nsym; k++)
        {
         g_span[k] = 0;
         int at = -1;
         for(int i = 0; i < a.n; i++)
            if(a.names[i] == g_sym[k])
              {
               at = i;
               break;
              }
         if(at >= 0)
           {
            g_curMsc[k] = a.mscs[at];
            g_curCount[k] = (int)a.counts[at];
            g_needLive[k] = false;
            if(!g_hasOrigin[k])
              {
               g_originMsc[k] = a.mscs[at];
               g_originCount[k] = (int)a.counts[at];
               g_hasOrigin[k] = true;
              }
            Log(g_sym[k] + ": resuming after " + MscToString(a.mscs[at]) + " (" + (string)a.counts[at] + " tick(s) of that ms already taken)");
           }
         else
            if(g_hasOrigin[k])
              {
               g_curMsc[k] = g_originMsc[k];
               g_curCount[k] = g_originCount[k];
               g_needLive[k] = false;
               Log(g_sym[k] + ": no cursor on the bridge, re-reading from where this run started it, " + MscToString(g_originMsc[k]));
              }
            else
               g_needLive[k] = true;   // PrepareCursors, after SYMBOLS
        }
      g_amnesia = false;
     }
   else
      AckUpTo(a.nextSeq - 1);   // below next_seq the bridge has it all (protocol.md 5.6)
   g_nextSend = a.nextSeq;       // everything buffered from next_seq on goes again
   g_ackedSeq = a.nextSeq - 1;
   g_credit = a.credit;
   g_maxFrameBytes = ToInt(a.maxFrame);
   // a frame holds at most min(ours, the bridge's) ticks and fits min(InpMaxFrameBytes, max_frame_bytes)
   int frameBytes = MinI(InpMaxFrameBytes, g_maxFrameBytes);
   g_maxTicksFrame = MaxI(1, MinI(MinI(InpMaxTicksPerFrame, ToInt(a.maxTicks)),
                                  (frameBytes - TICKS_HEADER_BYTES) / g_structSize));
   int bridgeHb = MaxI(100, ToInt(a.hbInterval));
   g_hbIntervalMs = InpHeartbeatMs > 0 ? MinI(InpHeartbeatMs, bridgeHb) : bridgeHb;
   g_hbTimeoutMs = MaxI(1000, ToInt(a.hbTimeout));
   g_backoffMs = InpBackoffMinMs;
   WriteSymbols(g_sym, g_digits, g_nsym);
   if(!SendFrame())
      return;
   g_state = ST_READY;
   g_hbWaitSince = 0;
   Log(StringFormat("session open: next_seq %s, credit to %s, %s tick(s) to (re)send, heartbeat %d ms, %d ticks per frame",
                    (string)a.nextSeq, (string)a.credit, (string)(g_nextSeq - g_nextSend), g_hbIntervalMs, g_maxTicksFrame));
  }

// ACK: credit never decreases within a connection.
void OnAck()
  {
   long acked = 0, credit = 0;
   if(!ReadAck(acked, credit))
     {
      ProtocolFail(TS_ERR_FRAME_PAYLOAD, "malformed ACK");
      return;
     }
   if(g_amnesia)
      return;   // nothing held yet; HELLO_ACK sets the numbering
   AckUpTo(acked);   // the EA keeps every tick until an ACK covers it (protocol.md 5.5)
   if(acked > g_ackedSeq)
      g_ackedSeq = acked;
   if(g_state == ST_READY && credit > g_credit)
      g_credit = credit;   // before HELLO_ACK, that frame sets the credit
  }

// RESEND: send again, in order, every tick held from from_seq on.
void OnResend()
  {
   long from = 0;
   if(!ReadResend(from))
     {
      ProtocolFail(TS_ERR_FRAME_PAYLOAD, "malformed RESEND");
      return;
     }
   if(from < g_bufStart)
     {
      // Freed after an ACK: cannot happen with a consistent bridge. A new session resyncs.
      Drop("RESEND from seq " + (string)from + ", which was ACKed and freed; reconnecting");
      return;
     }
   if(from <= g_nextSeq)
      g_nextSend = from;
   Log("RESEND from seq " + (string)from);
  }

// ERROR: the bridge closes after it.
void OnError()
  {
   uint code = 0;
   string text = "";
   if(!ReadError(code, text))
     {
      Drop("malformed ERROR frame from the bridge");
      return;
     }
   // an unknown number is treated as ERR_INTERNAL (protocol.md 7)
   string name = code < (uint)ArraySize(g_errNames) ? g_errNames[code] : "ERR_INTERNAL (code " + (string)code + ")";
   Log("bridge ERROR " + name + ": " + text);
   if(code == TS_ERR_AUTH || code == TS_ERR_STRUCT_SIZE || code == TS_ERR_FRAME_VERSION)
      Fatal(name + ": " + text + " - fix InpSource/InpSecret or update, then re-attach the EA");
   else
      if(code == TS_ERR_LIMIT)
         // More symbols than max_symbols (the EA itself keeps to the frame limits): every
         // reconnect would be refused the same way.
         Fatal(name + ": " + text + " - list fewer InpSymbols or raise the bridge's limit, then re-attach the EA");
      else
         Drop("bridge sent " + name);
  }

//+------------------------------------------------------------------+
//| Chart status line                                                |
//+------------------------------------------------------------------+
void ShowStatus()
  {
   ulong now = GetTickCount64();
   if(now - g_statusAt < 500)
      return;
   g_statusAt = now;
   long held = g_nextSeq - g_bufStart;
   string state = g_warm < g_nsym ? StringFormat("reading tick history %d/%d", g_warm, g_nsym) : g_stateNames[g_state];
   Comment(StringFormat("TickStream %s -> %s:%u  [%s, connection attempts %d]\nsymbols %d, captured %s, sent %s, ACKed to seq %s\nun-ACKed %s / %d%s, next seq %s, credit to %s",
                        g_source, g_host, g_port, state, g_connects,
                        g_nsym, (string)g_captured, (string)g_sentTicks, (string)g_ackedSeq,
                        (string)held, g_cap, held >= g_cap ? " (FULL: capture paused)" : "",
                        (string)g_nextSeq, (string)g_credit));
  }
//+------------------------------------------------------------------+
