//+------------------------------------------------------------------+
//| Tradewire/Outbox.mqh                                             |
//| The EA's durable state: `seq` and every durable message the hub  |
//| has not acked yet, kept in a file under the terminal's Files     |
//| folder (or the common one) so that a terminal restart or a lost  |
//| connection loses nothing. Rules of EA protocol v1:               |
//|  - seq is per account and only grows, across restarts;           |
//|  - a message stays until an ack covers it (acks are cumulative), |
//|    or the hub refuses it for good (an error naming its id);      |
//|  - one durable frame at a time: the next waits for the answer;   |
//|  - after `welcome` the unacked ones are resent, in seq order.    |
//|                                                                  |
//| File (UTF-8 text, one record a line, rewritten atomically: a     |
//| temporary file is written and then moved over the old one):      |
//|   TWOUTBOX 1                                                     |
//|   seq 42                                                         |
//|   synced 1                                                       |
//|   msg 41 {"type":"position","seq":41,"id":"open-123-41",...}     |
//|   <other lines>   kept for the EA as they are (its positions)    |
//+------------------------------------------------------------------+
#ifndef TRADEWIRE_OUTBOX_MQH
#define TRADEWIRE_OUTBOX_MQH

#include "Util.mqh"

// A durable message's JSON starts {"type":...,"seq":N,"id":"<event>-<position>-N",...} (the EA
// writes seq and id first). Give it another seq, and the id the matching suffix.
string TwRenumber(const string json, const long seq)
  {
   int at = StringFind(json, "\"seq\":");
   if(at < 0)
      return json;
   int v = at + 6;
   int e = v;
   int n = StringLen(json);
   while(e < n)
     {
      ushort c = StringGetCharacter(json, e);
      if(c < '0' || c > '9')
         break;
      e++;
     }
   string out = StringSubstr(json, 0, v) + IntegerToString(seq) + StringSubstr(json, e);
   int idAt = StringFind(out, "\"id\":\"");
   if(idAt < 0)
      return out;
   int a = idAt + 6;
   int b = StringFind(out, "\"", a);
   if(b < 0)
      return out;
   string id = StringSubstr(out, a, b - a);
   int dash = -1;
   for(int p = StringFind(id, "-"); p >= 0; p = StringFind(id, "-", p + 1))
      dash = p;
   string renamed = (dash >= 0 ? StringSubstr(id, 0, dash + 1) : id + "-") + IntegerToString(seq);
   return StringSubstr(out, 0, a) + renamed + StringSubstr(out, b);
  }

class CTwOutbox
  {
private:
   string            m_file;
   int               m_common;      // 0 or FILE_COMMON
   long              m_seq;
   bool              m_synced;      // a welcome was seen since the file was created
   long              m_seqs[];
   string            m_msgs[];
   string            m_extra[];

   bool              WriteFile(const string name, const string text)
     {
      int h = FileOpen(name, FILE_WRITE | FILE_BIN | m_common);
      if(h == INVALID_HANDLE)
         return false;
      uchar bytes[];
      int n = TwUtf8(text, bytes);
      uint written = n > 0 ? FileWriteArray(h, bytes, 0, n) : 0;
      FileFlush(h);
      FileClose(h);
      return (int)written == n;
     }

public:
                     CTwOutbox(void) : m_file(""), m_common(0), m_seq(0), m_synced(false) {}

   string            File(void) const { return m_file; }
   long              Seq(void) const { return m_seq; }
   bool              Synced(void) const { return m_synced; }
   long              NextSeq(void) const { return m_seq + 1; }
   int               Count(void) const { return ArraySize(m_seqs); }
   long              SeqAt(const int i) const { return m_seqs[i]; }
   string            MessageAt(const int i) const { return m_msgs[i]; }

   // Load the file if there is one. False only when it exists and cannot be read.
   bool              Open(const string file, const bool common)
     {
      m_file = file;
      m_common = common ? FILE_COMMON : 0;
      m_seq = 0;
      m_synced = false;
      ArrayResize(m_seqs, 0);
      ArrayResize(m_msgs, 0);
      ArrayResize(m_extra, 0);
      string folder = StringSubstr(file, 0, StringFind(file, "\\"));
      if(folder != "" && folder != file)
         FolderCreate(folder, m_common);
      if(!FileIsExist(file, m_common))
         return true;
      int h = FileOpen(file, FILE_READ | FILE_BIN | FILE_SHARE_READ | m_common);
      if(h == INVALID_HANDLE)
         return false;
      int size = (int)FileSize(h);
      uchar bytes[];
      if(size > 0)
         FileReadArray(h, bytes, 0, size);
      FileClose(h);
      string text = size > 0 ? CharArrayToString(bytes, 0, size, CP_UTF8) : "";
      string lines[];
      int count = StringSplit(text, '\n', lines);
      if(count < 1 || !TwStartsWith(lines[0], "TWOUTBOX 1"))
        {
         // Not ours, or damaged: keep it aside, start afresh rather than stop streaming.
         FileMove(file, m_common, file + ".broken", FILE_REWRITE | m_common);
         TwError("outbox " + file + " was unreadable: moved to " + file + ".broken, starting a new one");
         return true;
        }
      for(int i = 1; i < count; i++)
        {
         string line = lines[i];
         StringReplace(line, "\r", "");
         if(line == "")
            continue;
         if(TwStartsWith(line, "seq "))
            m_seq = StringToInteger(StringSubstr(line, 4));
         else if(TwStartsWith(line, "synced "))
            m_synced = StringToInteger(StringSubstr(line, 7)) != 0;
         else if(TwStartsWith(line, "msg "))
           {
            int space = StringFind(line, " ", 4);
            if(space < 0)
               continue;
            long seq = StringToInteger(StringSubstr(line, 4, space - 4));
            int k = ArraySize(m_seqs);
            ArrayResize(m_seqs, k + 1);
            ArrayResize(m_msgs, k + 1);
            m_seqs[k] = seq;
            m_msgs[k] = StringSubstr(line, space + 1);
            if(seq > m_seq)
               m_seq = seq;
           }
         else
           {
            int k = ArraySize(m_extra);
            ArrayResize(m_extra, k + 1);
            m_extra[k] = line;
           }
        }
      return true;
     }

   bool              Save(void)
     {
      string text = "TWOUTBOX 1\nseq " + IntegerToString(m_seq) + "\nsynced " + (m_synced ? "1" : "0") + "\n";
      for(int i = 0; i < ArraySize(m_seqs); i++)
         text += "msg " + IntegerToString(m_seqs[i]) + " " + m_msgs[i] + "\n";
      for(int i = 0; i < ArraySize(m_extra); i++)
         text += m_extra[i] + "\n";
      string tmp = m_file + ".tmp";
      if(!WriteFile(tmp, text))
         return false;
      return FileMove(tmp, m_common, m_file, FILE_REWRITE | m_common);
     }

   // Keep a durable message. `seq` must be NextSeq(): the caller wrote it into the JSON.
   void              Append(const long seq, const string json)
     {
      int k = ArraySize(m_seqs);
      ArrayResize(m_seqs, k + 1);
      ArrayResize(m_msgs, k + 1);
      m_seqs[k] = seq;
      m_msgs[k] = json;
      if(seq > m_seq)
         m_seq = seq;
     }

   // Cumulative ack: drop every message with seq <= `seq`. Returns how many were dropped.
   int               Ack(const long seq)
     {
      int keep = 0;
      int n = ArraySize(m_seqs);
      for(int i = 0; i < n; i++)
        {
         if(m_seqs[i] <= seq)
            continue;
         m_seqs[keep] = m_seqs[i];
         m_msgs[keep] = m_msgs[i];
         keep++;
        }
      ArrayResize(m_seqs, keep);
      ArrayResize(m_msgs, keep);
      return n - keep;
     }

   // Drop the message with this id (the hub refused it for good). Returns how many were dropped.
   int               Refuse(const string id)
     {
      string needle = "\"id\":\"" + id + "\"";
      int keep = 0;
      int n = ArraySize(m_seqs);
      for(int i = 0; i < n; i++)
        {
         if(StringFind(m_msgs[i], needle) >= 0)
            continue;
         m_seqs[keep] = m_seqs[i];
         m_msgs[keep] = m_msgs[i];
         keep++;
        }
      ArrayResize(m_seqs, keep);
      ArrayResize(m_msgs, keep);
      return n - keep;
     }

   // Apply the hub's welcome.ackedSeq. Pending messages are renumbered above it when they were
   // never sent (the first welcome of a new outbox: its file was lost, or this is the first run)
   // or when the hub holds more than we remember; numbered as they are, the hub would take them
   // for acked ones or refuse them (seq_not_increasing), and they would be lost.
   // Returns true when it renumbered.
   bool              OnWelcome(const long ackedSeq)
     {
      bool renumber = ackedSeq > m_seq || (!m_synced && ackedSeq > 0);
      m_synced = true;
      if(!renumber)
        {
         Ack(ackedSeq);
         return false;
        }
      long seq = ackedSeq;
      for(int i = 0; i < ArraySize(m_seqs); i++)
        {
         seq++;
         m_seqs[i] = seq;
         m_msgs[i] = TwRenumber(m_msgs[i], seq);
        }
      m_seq = seq > ackedSeq ? seq : ackedSeq;
      return ArraySize(m_seqs) > 0;
     }

   void              SetExtra(const string &lines[])
     {
      ArrayResize(m_extra, 0);
      ArrayCopy(m_extra, lines);
     }
   int               Extra(string &lines[]) const
     {
      ArrayResize(lines, 0);
      ArrayCopy(lines, m_extra);
      return ArraySize(lines);
     }
  };

#endif
