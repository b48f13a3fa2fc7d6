//+------------------------------------------------------------------+
//| Tradewire/WebSocket.mqh                                          |
//| An RFC 6455 WebSocket client over MQL5's native sockets. No DLL. |
//|                                                                  |
//| - ws:// plain TCP (SocketSend / SocketRead);                     |
//| - wss:// TLS: on port 443 the terminal negotiates TLS by itself; |
//|   on any other port SocketTlsHandshake does. Once TLS is on only |
//|   SocketTlsSend / SocketTlsReadAvailable are used. A failed TLS  |
//|   handshake is an error: never a silent fall-back to plain text. |
//| - the opening handshake checks the 101 status, the Upgrade and   |
//|   Connection headers and Sec-WebSocket-Accept (SHA-1 + base64);  |
//| - client frames are masked with keys from TwRandomBytes;         |
//| - fragmented messages are reassembled; ping is answered with     |
//|   pong; the close handshake is done both ways.                   |
//| Non-blocking use: call Poll() from OnTimer; it reads what has    |
//| arrived and returns the complete text messages.                  |
//+------------------------------------------------------------------+
#ifndef TRADEWIRE_WEBSOCKET_MQH
#define TRADEWIRE_WEBSOCKET_MQH

#include "Util.mqh"

#define TW_WS_GUID          "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define TW_WS_OP_CONT       0x0
#define TW_WS_OP_TEXT       0x1
#define TW_WS_OP_BINARY     0x2
#define TW_WS_OP_CLOSE      0x8
#define TW_WS_OP_PING       0x9
#define TW_WS_OP_PONG       0xA
#define TW_WS_MAX_HEADER    16384
#define TW_WS_CLOSE_NONE    0      // no close frame seen (yet)
#define TW_WS_CLOSE_ABNORMAL 1006  // the connection dropped without a close frame

class CTwWebSocket
  {
private:
   int               m_sock;
   bool              m_tls;
   bool              m_open;         // handshake done and not closed
   bool              m_closeSent;
   string            m_host;
   int               m_port;
   string            m_path;
   bool              m_secure;
   bool              m_apiGateway;   // an API Gateway URL (the AWS deployment): frames at most 32 KB
   uchar             m_rx[];         // bytes received and not parsed yet
   uchar             m_frag[];       // a fragmented data message being reassembled
   int               m_fragOpcode;   // its opcode, 0 when none
   int               m_maxMessage;   // bytes; larger messages close the connection (1009)
   int               m_closeCode;
   string            m_closeReason;
   string            m_error;

   //--- raw socket I/O
   bool              SendRaw(const uchar &data[], const int len)
     {
      int sent = 0;
      uint deadline = GetTickCount() + 10000;
      while(sent < len)
        {
         uchar chunk[];
         ArrayCopy(chunk, data, 0, sent, len - sent);
         ResetLastError();
         int n = m_tls ? SocketTlsSend(m_sock, chunk, len - sent) : SocketSend(m_sock, chunk, len - sent);
         if(n < 0)
           {
            m_error = StringFormat("send failed (error %d)", GetLastError());
            return false;
           }
         sent += n;
         if(sent < len)
           {
            if((int)(deadline - GetTickCount()) <= 0)
              {
               m_error = "send timed out";
               return false;
              }
            Sleep(1);
           }
        }
      return true;
     }

   // Whatever has arrived, without waiting: bytes read, 0 for nothing, -1 when the connection is gone.
   int               ReadSome(uchar &buf[])
     {
      ArrayResize(buf, 0);
      if(m_sock == INVALID_HANDLE)
         return -1;
      ResetLastError();
      int n;
      if(m_tls)
         n = SocketTlsReadAvailable(m_sock, buf, 65536);
      else
        {
         uint avail = SocketIsReadable(m_sock);
         if(avail == 0)
            return SocketIsConnected(m_sock) ? 0 : -1;
         uint want = avail > 65536 ? 65536 : avail;
         n = SocketRead(m_sock, buf, want, 10);
        }
      if(n < 0)
        {
         // A read timeout also returns -1: only a closed socket is a lost connection.
         if(SocketIsConnected(m_sock))
            return 0;
         m_error = StringFormat("connection lost (error %d)", GetLastError());
         return -1;
        }
      if(n == 0 && !SocketIsConnected(m_sock))
         return -1;
      return n;
     }

   void              Append(const uchar &chunk[], const int n)
     {
      int have = ArraySize(m_rx);
      ArrayResize(m_rx, have + n);
      ArrayCopy(m_rx, chunk, have, 0, n);
     }

   void              Consume(const int n)
     {
      int have = ArraySize(m_rx);
      if(n >= have)
        {
         ArrayResize(m_rx, 0);
         return;
        }
      uchar rest[];
      ArrayCopy(rest, m_rx, 0, n, have - n);
      ArrayResize(m_rx, 0);
      ArrayCopy(m_rx, rest);
     }

   //--- frames
   bool              SendFrame(const int opcode, const uchar &payload[], const int len)
     {
      if(m_sock == INVALID_HANDLE)
         return false;
      int header = 2 + (len > 65535 ? 8 : (len > 125 ? 2 : 0)) + 4;
      uchar frame[];
      ArrayResize(frame, header + len);
      frame[0] = (uchar)(0x80 | opcode);       // FIN: we never fragment what we send
      int pos = 2;
      if(len <= 125)
         frame[1] = (uchar)(0x80 | len);       // 0x80: masked, as every client frame must be
      else if(len <= 65535)
        {
         frame[1] = (uchar)(0x80 | 126);
         frame[2] = (uchar)((len >> 8) & 0xFF);
         frame[3] = (uchar)(len & 0xFF);
         pos = 4;
        }
      else
        {
         frame[1] = (uchar)(0x80 | 127);
         ulong big = (ulong)len;
         for(int i = 0; i < 8; i++)
            frame[2 + i] = (uchar)((big >> (8 * (7 - i))) & 0xFF);
         pos = 10;
        }
      uchar mask[];
      TwRandomBytes(mask, 4);
      for(int i = 0; i < 4; i++)
         frame[pos + i] = mask[i];
      pos += 4;
      for(int i = 0; i < len; i++)
         frame[pos + i] = (uchar)(payload[i] ^ mask[i & 3]);
      return SendRaw(frame, header + len);
     }

   void              Fail(const int code, const string why)
     {
      m_error = why;
      if(m_open && !m_closeSent)
         SendClose(code, why);
      m_closeCode = code;
      m_closeReason = why;
      Drop();
     }

   void              SendClose(const int code, const string reason)
     {
      uchar text[];
      int n = TwUtf8(StringSubstr(reason, 0, 60), text);
      uchar payload[];
      ArrayResize(payload, 2 + n);
      payload[0] = (uchar)((code >> 8) & 0xFF);
      payload[1] = (uchar)(code & 0xFF);
      for(int i = 0; i < n; i++)
         payload[2 + i] = text[i];
      m_closeSent = true;
      SendFrame(TW_WS_OP_CLOSE, payload, 2 + n);
     }

   void              Deliver(const int opcode, const uchar &payload[], const int len, string &messages[])
     {
      if(opcode != TW_WS_OP_TEXT)
        {
         TwWarn("websocket: ignoring a binary message of " + IntegerToString(len) + " bytes");
         return;
        }
      int k = ArraySize(messages);
      ArrayResize(messages, k + 1);
      messages[k] = len > 0 ? CharArrayToString(payload, 0, len, CP_UTF8) : "";
     }

   // Parse one frame from m_rx: 1 parsed, 0 needs more bytes, -1 the connection is over.
   int               ParseFrame(string &messages[])
     {
      int have = ArraySize(m_rx);
      if(have < 2)
         return 0;
      int b0 = m_rx[0], b1 = m_rx[1];
      bool fin = (b0 & 0x80) != 0;
      int opcode = b0 & 0x0F;
      if((b0 & 0x70) != 0)
        {
         Fail(1002, "reserved bits set: no extension was negotiated");
         return -1;
        }
      if((b1 & 0x80) != 0)
        {
         Fail(1002, "the server masked a frame");
         return -1;
        }
      ulong plen = (ulong)(b1 & 0x7F);
      int off = 2;
      if(plen == 126)
        {
         if(have < 4)
            return 0;
         plen = ((ulong)m_rx[2] << 8) | (ulong)m_rx[3];
         off = 4;
        }
      else if(plen == 127)
        {
         if(have < 10)
            return 0;
         plen = 0;
         for(int i = 0; i < 8; i++)
            plen = (plen << 8) | (ulong)m_rx[2 + i];
         off = 10;
        }
      if(plen > (ulong)m_maxMessage)
        {
         Fail(1009, "message too big");
         return -1;
        }
      int len = (int)plen;
      if(have < off + len)
         return 0;
      uchar payload[];
      if(len > 0)
         ArrayCopy(payload, m_rx, 0, off, len);
      Consume(off + len);

      if(opcode >= 0x8)   // control frames: never fragmented, at most 125 bytes
        {
         if(!fin || len > 125)
           {
            Fail(1002, "bad control frame");
            return -1;
           }
         if(opcode == TW_WS_OP_PING)
           {
            SendFrame(TW_WS_OP_PONG, payload, len);
            return 1;
           }
         if(opcode == TW_WS_OP_PONG)
            return 1;
         if(opcode == TW_WS_OP_CLOSE)
           {
            m_closeCode = len >= 2 ? ((int)payload[0] << 8) | (int)payload[1] : 1005;
            m_closeReason = len > 2 ? CharArrayToString(payload, 2, len - 2, CP_UTF8) : "";
            if(!m_closeSent)   // echo the close, as RFC 6455 5.5.1 asks
               SendClose(m_closeCode == 1005 ? 1000 : m_closeCode, "");
            Drop();
            return -1;
           }
         Fail(1002, "unknown control opcode " + IntegerToString(opcode));
         return -1;
        }
      if(opcode == TW_WS_OP_CONT)
        {
         if(m_fragOpcode == 0)
           {
            Fail(1002, "continuation without a first fragment");
            return -1;
           }
         int have_frag = ArraySize(m_frag);
         if(have_frag + len > m_maxMessage)
           {
            Fail(1009, "message too big");
            return -1;
           }
         ArrayResize(m_frag, have_frag + len);
         if(len > 0)
            ArrayCopy(m_frag, payload, have_frag, 0, len);
         if(fin)
           {
            Deliver(m_fragOpcode, m_frag, ArraySize(m_frag), messages);
            ArrayResize(m_frag, 0);
            m_fragOpcode = 0;
           }
         return 1;
        }
      if(opcode == TW_WS_OP_TEXT || opcode == TW_WS_OP_BINARY)
        {
         if(m_fragOpcode != 0)
           {
            Fail(1002, "new message before the last one's final fragment");
            return -1;
           }
         if(fin)
            Deliver(opcode, payload, len, messages);
         else
           {
            m_fragOpcode = opcode;
            ArrayResize(m_frag, 0);
            if(len > 0)
               ArrayCopy(m_frag, payload);
           }
         return 1;
        }
      Fail(1002, "unknown opcode " + IntegerToString(opcode));
      return -1;
     }

   //--- opening handshake
   string            HeaderValue(const string &lines[], const string name)
     {
      string want = TwLower(name) + ":";
      for(int i = 1; i < ArraySize(lines); i++)
        {
         string line = lines[i];
         if(TwStartsWith(TwLower(line), want))
            return TwTrim(StringSubstr(line, StringLen(want)));
        }
      return "";
     }

   bool              Handshake(const string token, const string userAgent, const uint timeoutMs)
     {
      uchar nonce[];
      TwRandomBytes(nonce, 16);
      uchar none[];
      uchar b64[];
      if(CryptEncode(CRYPT_BASE64, nonce, none, b64) <= 0)
        {
         m_error = "CryptEncode(CRYPT_BASE64) failed";
         return false;
        }
      string key = CharArrayToString(b64, 0, ArraySize(b64));
      string hostHeader = m_host;
      if(!((m_secure && m_port == 443) || (!m_secure && m_port == 80)))
         hostHeader += ":" + IntegerToString(m_port);
      string request = "GET " + m_path + " HTTP/1.1\r\n"
                       + "Host: " + hostHeader + "\r\n"
                       + "Upgrade: websocket\r\n"
                       + "Connection: Upgrade\r\n"
                       + "Sec-WebSocket-Key: " + key + "\r\n"
                       + "Sec-WebSocket-Version: 13\r\n"
                       + "Authorization: Bearer " + token + "\r\n"
                       + "User-Agent: " + userAgent + "\r\n"
                       + "\r\n";
      uchar req[];
      int n = TwUtf8(request, req);
      if(!SendRaw(req, n))
         return false;

      // Read up to the blank line that ends the response header; keep what follows (frames).
      uint deadline = GetTickCount() + timeoutMs;
      int headerEnd = -1;
      while(headerEnd < 0)
        {
         uchar chunk[];
         int got = ReadSome(chunk);
         if(got < 0)
           {
            m_error = "connection closed during the WebSocket handshake";
            return false;
           }
         if(got > 0)
            Append(chunk, got);
         int have = ArraySize(m_rx);
         for(int i = 3; i < have && headerEnd < 0; i++)
            if(m_rx[i - 3] == '\r' && m_rx[i - 2] == '\n' && m_rx[i - 1] == '\r' && m_rx[i] == '\n')
               headerEnd = i + 1;
         if(headerEnd >= 0)
            break;
         if(have > TW_WS_MAX_HEADER)
           {
            m_error = "handshake response header too large";
            return false;
           }
         if((int)(deadline - GetTickCount()) <= 0 || IsStopped())
           {
            m_error = "no handshake response within " + IntegerToString(timeoutMs) + " ms";
            return false;
           }
         if(got == 0)
            Sleep(10);
        }
      string head = CharArrayToString(m_rx, 0, headerEnd, CP_UTF8);
      Consume(headerEnd);
      string lines[];
      StringReplace(head, "\r\n", "\n");
      int count = StringSplit(head, '\n', lines);
      if(count < 1)
        {
         m_error = "empty handshake response";
         return false;
        }
      string status[];
      StringSplit(lines[0], ' ', status);
      int code = ArraySize(status) >= 2 ? (int)StringToInteger(status[1]) : 0;
      if(code != 101)
        {
         m_error = "the server refused the WebSocket upgrade: " + lines[0];
         if(code == 401 || code == 403)
            m_closeCode = 1008;   // handled like a refused token
         return false;
        }
      if(TwLower(HeaderValue(lines, "Upgrade")) != "websocket" || StringFind(TwLower(HeaderValue(lines, "Connection")), "upgrade") < 0)
        {
         m_error = "the 101 response lacks Upgrade: websocket / Connection: Upgrade (a proxy in the way?)";
         return false;
        }
      // Sec-WebSocket-Accept = base64(SHA-1(key + GUID)): proves a WebSocket server answered this request.
      uchar material[];
      TwUtf8(key + TW_WS_GUID, material);
      uchar sha[];
      uchar expected[];
      if(CryptEncode(CRYPT_HASH_SHA1, material, none, sha) != 20 || CryptEncode(CRYPT_BASE64, sha, none, expected) <= 0)
        {
         m_error = "CryptEncode(CRYPT_HASH_SHA1) failed";
         return false;
        }
      string accept = HeaderValue(lines, "Sec-WebSocket-Accept");
      if(accept != CharArrayToString(expected, 0, ArraySize(expected)))
        {
         m_error = "bad Sec-WebSocket-Accept '" + accept + "': not a WebSocket server";
         return false;
        }
      return true;
     }

public:
                     CTwWebSocket(void) : m_sock(INVALID_HANDLE), m_tls(false), m_open(false), m_closeSent(false),
                     m_port(0), m_secure(false), m_apiGateway(false), m_fragOpcode(0), m_maxMessage(4 * 1024 * 1024),
                     m_closeCode(TW_WS_CLOSE_NONE) {}
                    ~CTwWebSocket(void) { Drop(); }

   bool              IsOpen(void) const { return m_open; }
   int               CloseCode(void) const { return m_closeCode; }
   string            CloseReason(void) const { return m_closeReason; }
   string            LastError(void) const { return m_error; }
   bool              ApiGateway(void) const { return m_apiGateway; }
   string            Endpoint(void) const { return (m_secure ? "wss://" : "ws://") + m_host + ":" + IntegerToString(m_port) + m_path; }

   // ws[s]://host[:port][/prefix] or http[s]://...; the EA endpoint /ea/v1 is added when missing.
   bool              ParseUrl(const string url)
     {
      string s = TwTrim(url);
      string lower = TwLower(s);
      string rest;
      if(TwStartsWith(lower, "wss://") || TwStartsWith(lower, "https://"))
        {
         m_secure = true;
         m_port = 443;
         rest = StringSubstr(s, TwStartsWith(lower, "wss://") ? 6 : 8);
        }
      else if(TwStartsWith(lower, "ws://") || TwStartsWith(lower, "http://"))
        {
         m_secure = false;
         m_port = 80;
         rest = StringSubstr(s, TwStartsWith(lower, "ws://") ? 5 : 7);
        }
      else
        {
         m_error = "the server URL must start with wss://, ws://, https:// or http://";
         return false;
        }
      int slash = StringFind(rest, "/");
      string hostport = slash < 0 ? rest : StringSubstr(rest, 0, slash);
      string path = slash < 0 ? "" : StringSubstr(rest, slash);
      while(TwEndsWith(path, "/"))
         path = StringSubstr(path, 0, StringLen(path) - 1);
      // An API Gateway WebSocket URL (the AWS deployment's EaWebSocketUrl) is used as it is: such an API
      // has no paths below its stage.
      string lowerHost = hostport;
      StringToLower(lowerHost);
      m_apiGateway = StringFind(lowerHost, ".execute-api.") >= 0;
      if(!TwEndsWith(path, "/ea/v1") && !m_apiGateway)
         path += "/ea/v1";
      int colon = StringFind(hostport, ":");
      if(colon >= 0)
        {
         m_port = (int)StringToInteger(StringSubstr(hostport, colon + 1));
         hostport = StringSubstr(hostport, 0, colon);
        }
      m_host = hostport;
      m_path = path;
      if(m_host == "" || m_port <= 0 || m_port > 65535)
        {
         m_error = "bad host or port in the server URL";
         return false;
        }
      return true;
     }

   bool              Connect(const string url, const string token, const string userAgent, const uint timeoutMs)
     {
      Drop();
      m_error = "";
      m_closeCode = TW_WS_CLOSE_NONE;
      m_closeReason = "";
      m_closeSent = false;
      m_fragOpcode = 0;
      if(!ParseUrl(url))
         return false;
      ResetLastError();
      m_sock = SocketCreate();
      if(m_sock == INVALID_HANDLE)
        {
         m_error = StringFormat("SocketCreate failed (error %d)", GetLastError());
         return false;
        }
      ResetLastError();
      if(!SocketConnect(m_sock, m_host, m_port, timeoutMs))
        {
         m_error = StringFormat("cannot connect to %s:%d (error %d)", m_host, m_port, GetLastError());
         Drop();
         return false;
        }
      SocketTimeouts(m_sock, timeoutMs, timeoutMs);
      m_tls = false;
      if(m_secure)
        {
         string subject, issuer, serial, thumbprint;
         datetime expiration;
         // On port 443 the terminal has already negotiated TLS; elsewhere we ask for it.
         bool secured = (m_port == 443) && SocketTlsCertificate(m_sock, subject, issuer, serial, thumbprint, expiration);
         if(!secured)
           {
            ResetLastError();
            if(!SocketTlsHandshake(m_sock, m_host))
              {
               m_error = StringFormat("TLS handshake with %s failed (error %d)", m_host, GetLastError());
               Drop();
               return false;
              }
            SocketTlsCertificate(m_sock, subject, issuer, serial, thumbprint, expiration);
           }
         m_tls = true;
         TwDebug("TLS certificate: " + subject + ", issued by " + issuer + ", valid until " + TimeToString(expiration));
        }
      if(!Handshake(token, userAgent, timeoutMs))
        {
         Drop();
         return false;
        }
      m_open = true;
      return true;
     }

   bool              SendText(const string text)
     {
      if(!m_open)
         return false;
      uchar payload[];
      int n = TwUtf8(text, payload);
      if(!SendFrame(TW_WS_OP_TEXT, payload, n))
        {
         m_closeCode = TW_WS_CLOSE_ABNORMAL;
         Drop();
         return false;
        }
      return true;
     }

   // Read what has arrived and append every complete text message to `messages`.
   // Returns how many were appended; IsOpen() tells whether the connection is still up.
   int               Poll(string &messages[])
     {
      int before = ArraySize(messages);
      if(m_sock == INVALID_HANDLE)
         return 0;
      bool lost = false;
      for(int guard = 0; guard < 64; guard++)
        {
         uchar chunk[];
         int got = ReadSome(chunk);
         if(got < 0)
           {
            lost = true;
            break;
           }
         if(got == 0)
            break;
         Append(chunk, got);
        }
      // Frames that arrived before a drop still count (an ack followed by a close, say).
      while(m_sock != INVALID_HANDLE)
        {
         if(ParseFrame(messages) <= 0)
            break;
        }
      if(lost && m_sock != INVALID_HANDLE)
        {
         if(m_closeCode == TW_WS_CLOSE_NONE)
            m_closeCode = TW_WS_CLOSE_ABNORMAL;
         Drop();
        }
      return ArraySize(messages) - before;
     }

   // The closing handshake, best effort and brief (OnDeinit has 2.5 s in all).
   void              Close(const int code, const string reason)
     {
      if(m_open && !m_closeSent)
        {
         SendClose(code, reason);
         uint deadline = GetTickCount() + 500;
         string ignored[];
         while(m_sock != INVALID_HANDLE && (int)(deadline - GetTickCount()) > 0)
           {
            Poll(ignored);
            if(m_sock != INVALID_HANDLE)
               Sleep(10);
           }
        }
      if(m_closeCode == TW_WS_CLOSE_NONE)
         m_closeCode = code;
      Drop();
     }

   // Drop the TCP connection at once.
   void              Drop(void)
     {
      if(m_sock != INVALID_HANDLE)
         SocketClose(m_sock);
      m_sock = INVALID_HANDLE;
      m_open = false;
      m_tls = false;
      ArrayResize(m_rx, 0);
      ArrayResize(m_frag, 0);
      m_fragOpcode = 0;
     }
  };

#endif
