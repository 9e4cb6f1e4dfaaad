# Writes identity-rules.json: `python3 tests/vectors/generate.py > tests/vectors/identity-rules.json`.
# Expected requests are built here independently of the Rust code: urllib.parse.quote with
# encodeURIComponent's safe set, base64 from the standard library.
import json, base64
from urllib.parse import quote
def anon(n): return base64.b64encode(bytes([n])*20).decode()
def enc(s): return quote(s, safe="-_.!~*'()")
K="demo"
A=[anon(i) for i in range(1,6)]      # browser b1
B=[anon(i) for i in range(101,106)]  # browser b2
def a_req(a,b,t): return f"/a?_n={enc(b)}&_p={enc(a)}&_k={K}&_t={t}"
def e_req(name,who,t,props=()):
    q="".join(f"{enc(k)}={enc(v)}&" for k,v in props)
    return f"/e?{q}_n={enc(name)}&_k={K}&_p={enc(who)}&_t={t}"
def s_req(who,t,props):
    q="".join(f"{enc(k)}={enc(v)}&" for k,v in props)
    return f"/s?{q}_k={K}&_p={enc(who)}&_t={t}"
def st(ai,ni,reqs):
    return {"km_ai":ai,"km_ni":ni,"current":ni if ni else ai,"requests":reqs}
def step(line, expect): return {"do":line,"expect":expect}
def kmq(b,t,*args): return {"browser":b,"at":t,"kmq":list(args)}
cases=[]
def case(name,row,steps,persons,events=None):
    c={"name":name,"row":row,"steps":steps,"persons":persons}
    if events: c["events"]=events
    cases.append(c)

# ---- anonymous column
case("new visitor gets an anonymous ID", "arrives with no cookies / anonymous",
  [step(kmq("b1",1,"record","Visited Site"), st(A[0],None,[e_req("Visited Site",A[0],1)]))],
  [[A[0]]])
case("identify on an anonymous browser aliases the anonymous ID", "identify('foo') / anonymous",
  [step(kmq("b1",1,"record","Viewed"), st(A[0],None,[e_req("Viewed",A[0],1)])),
   step(kmq("b1",2,"identify","foo"), st(A[0],"foo",[a_req(A[0],"foo",2)])),
   step(kmq("b1",3,"record","Bought"), st(A[0],"foo",[e_req("Bought","foo",3)]))],
  [[A[0],"foo"]], {"foo":["Viewed","Bought"]})
case("identify on the very first page still aliases", "identify('foo') / anonymous (decision)",
  [step(kmq("b1",1,"identify","foo"), st(A[0],"foo",[a_req(A[0],"foo",1)]))],
  [[A[0],"foo"]])
nulls=["", None, "null", "nil", "'null'", "'nil'", '"null"', '"nil"', "''", '""']
case("identify with an empty or null-like value keeps the anonymous ID", "identify('') / anonymous",
  [step(kmq("b1",i+1,"identify",v), st(A[0],None,[])) for i,v in enumerate(nulls)] +
  [step(kmq("b1",20,"record","Viewed"), st(A[0],None,[e_req("Viewed",A[0],20)]))],
  [[A[0]]])
form_fields=[
  {"name":"work_email","type":"text","value":"ignored@x.example","classes":["km_ignore"]},
  {"name":"user[email]","type":"text","value":"a@b.example"},
  {"name":"password","type":"password","value":"hunter2"},
  {"name":"cc_number","type":"text","value":"4111111111111111"},
  {"name":"comment","tag":"textarea","value":"hello"},
  {"name":"plan","type":"radio","value":"pro","checked":True},
  {"name":"plan","type":"radio","value":"free","checked":False},
  {"name":"colors[]","type":"checkbox","value":"red","checked":True},
  {"name":"colors[]","type":"checkbox","value":"blue","checked":True},
  {"name":"colors[]","type":"checkbox","value":"green","checked":False},
  {"name":"","type":"text","value":"no name","classes":["km_include"]},
  {"name":"notes","tag":"textarea","value":"keep me","classes":["km_include"]},
  {"name":"Source","type":"hidden","value":"ad"},
]
captured=[("user_email","a@b.example"),("plan","pro"),("colors","blue,red"),("notes","keep me")]
case("tracked form on an anonymous browser identifies from the email field", "trackSubmit / anonymous",
  [step(kmq("b1",1,"record","Viewed Signup"), st(A[0],None,[e_req("Viewed Signup",A[0],1)])),
   step({"browser":"b1","at":2,"submit":{"event":"Signed Up","properties":{"plan":"basic","ref":"home"},"fields":form_fields}},
        st(A[0],"a@b.example",[a_req(A[0],"a@b.example",2),
            e_req("Signed Up","a@b.example",2,[("plan","pro"),("ref","home")]+[c for c in captured if c[0]!="plan"])]))],
  [[A[0],"a@b.example"]], {"a@b.example":["Viewed Signup","Signed Up"]})
case("ignored and sensitive fields never identify", "trackSubmit / anonymous (capture rules)",
  [step({"browser":"b1","at":1,"submit":{"event":"Checkout","fields":[
      {"name":"email","type":"text","value":"x@y.example","classes":["km_ignore"]},
      {"name":"password_login","type":"text","value":"secret"},
      {"name":"city","type":"text","value":"Oslo"}]}},
      st(A[0],None,[e_req("Checkout",A[0],1,[("city","Oslo")])]))],
  [[A[0]]])
case("km_include overrides the sensitive pattern", "trackSubmit / anonymous (km_include)",
  [step({"browser":"b1","at":1,"submit":{"event":"Paid","fields":[
      {"name":"billing_zip","type":"text","value":"0150","classes":["km_include"]},
      {"name":"billing_city","type":"text","value":"Oslo"},
      {"name":"login","type":"email","value":"zed"}]}},
      st(A[0],"zed",[a_req(A[0],"zed",1),e_req("Paid","zed",1,[("billing_zip","0150"),("login","zed")])]))],
  [[A[0],"zed"]])
case("a password field is never captured and never identifies, whatever its name or class", "trackSubmit / anonymous (password)",
  [step({"browser":"b1","at":1,"submit":{"event":"Logged In","fields":[
      {"name":"login_pin","type":"password","value":"1234"},
      {"name":"email","type":"PASSWORD","value":"hunter2@x.example","classes":["km_include"]},
      {"name":"city","type":"text","value":"Oslo"}]}},
      st(A[0],None,[e_req("Logged In",A[0],1,[("city","Oslo")])]))],
  [[A[0]]])
case("a sensitive field never identifies, even when km_include captures it", "trackSubmit / anonymous (km_include, sensitive)",
  [step({"browser":"b1","at":1,"submit":{"event":"Paid","fields":[
      {"name":"login_pass","type":"text","value":"secret","classes":["km_include"]},
      {"name":"username","type":"text","value":"zed"}]}},
      st(A[0],"zed",[a_req(A[0],"zed",1),e_req("Paid","zed",1,[("login_pass","secret"),("username","zed")])]))],
  [[A[0],"zed"]])
case("class lists separated by tabs and newlines", "trackSubmit / anonymous (class attribute)",
  [step({"browser":"b1","at":1,"submit":{"event":"Sent","fields":[
      {"name":"email","type":"text","value":"x@y.example","class":"wide\tkm_ignore"},
      {"name":"billing_zip","type":"text","value":"0150","class":"a\nkm_include\tb"},
      {"name":"city","type":"text","value":"Oslo"}]}},
      st(A[0],None,[e_req("Sent",A[0],1,[("billing_zip","0150"),("city","Oslo")])]))],
  [[A[0]]])
case("[] fields whose names differ only in non-ASCII case are one property", "trackSubmit / anonymous (non-ASCII case)",
  [step({"browser":"b1","at":1,"submit":{"event":"Chose","fields":[
      {"name":"Ärger[]","type":"checkbox","value":"b","checked":True},
      {"name":"ärger[]","type":"checkbox","value":"a","checked":True},
      {"name":"ÉTÉ","type":"text","value":"1"},
      {"name":"été","type":"text","value":"2"}]}},
      st(A[0],None,[e_req("Chose",A[0],1,[("Ärger","a,b"),("ÉTÉ","2")])]))],
  [[A[0]]])
case("reserved _ names are never properties, from _kmq, URL or form", "reserved names / anonymous",
  [step(kmq("b1",1,"record","Buy",{"_p":"someone","_n":"Other","_t":"5","price":"5"}),
        st(A[0],None,[e_req("Buy",A[0],1,[("price","5")])])),
   step(kmq("b1",2,"set",{"_k":"stolen","plan":"pro"}), st(A[0],None,[s_req(A[0],2,[("plan","pro")])])),
   step({"browser":"b1","at":3,"visit":"https://shop.example/?kme=Clicked&km__p=someone&km_x=1"},
        st(A[0],None,[e_req("Clicked",A[0],3,[("x","1")])])),
   step({"browser":"b1","at":4,"submit":{"event":"Sent","fields":[
      {"name":"_p","type":"text","value":"someone"},
      {"name":"_n","type":"text","value":"x","classes":["km_include"]},
      {"name":"city","type":"text","value":"Oslo"}]}},
      st(A[0],None,[e_req("Sent",A[0],4,[("city","Oslo")])]))],
  [[A[0]]])
case("a URL command that fails changes nothing; an empty kme is no event", "URL API / odd input",
  [step({"browser":"b1","at":1,"visit":"https://shop.example/?kme=&km_source=ad"},
        st(A[0],None,[s_req(A[0],1,[("source","ad")])])),
   step({"browser":"b1","at":2,"visit":"https://shop.example/?kmi="+"k"*256+"&kme=Clicked"}, st(A[0],None,[])),
   step({"browser":"b1","at":3,"visit":"https://shop.example/?kmi=bob&kme="+"e"*256}, st(A[0],None,[])),
   step({"browser":"b1","at":4,"visit":"https://shop.example/?kmi=%FF&km_i=ok&km_%FF=x"},
        st(A[0],"ok",[a_req(A[0],"ok",4)]))],
  [[A[0],"ok"]])
case("a query inside the URL fragment is not the URL API", "URL API / fragment",
  [step({"browser":"b1","at":1,"visit":"https://shop.example/#/page?kmi=frag&kme=F"}, st(A[0],None,[]))],
  [])
case("an empty or invalid km_ai cookie is replaced by a new anonymous ID", "cookies / odd input",
  [step(kmq("b1",1,"record","Landed"), st(A[0],None,[e_req("Landed",A[0],1)])),
   step({"browser":"b1","at":2,"cookies":{"km_ai":""},"kmq":["record","Again"]}, st(A[1],None,[e_req("Again",A[1],2)])),
   step({"browser":"b1","at":3,"cookies":{"km_ai":"bad\u0001id"},"kmq":["record","Third"]}, st(A[2],None,[e_req("Third",A[2],3)]))],
  [[A[0]],[A[1]],[A[2]]])
case("a form whose identity field is not a valid ID is recorded without identifying", "trackSubmit / anonymous (256-character email)",
  [step({"browser":"b1","at":1,"submit":{"event":"Signed Up","fields":[
      {"name":"email","type":"text","value":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx@x.example"}]}},
      st(A[0],None,[e_req("Signed Up",A[0],1,[("email","xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx@x.example")])]))],
  [[A[0]]])
case("kmi link on an anonymous browser is identify", "URL kmi=foo / anonymous",
  [step({"browser":"b1","at":1,"visit":"https://shop.example/landing?kmi=foo&kme=Clicked+Ad&km_Link+Location=top&utm=x"},
        st(A[0],"foo",[a_req(A[0],"foo",1),e_req("Clicked Ad","foo",1,[("Link Location","top")])])),
   step({"browser":"b1","at":2,"visit":"https://shop.example/?km_source=newsletter"},
        st(A[0],"foo",[s_req("foo",2,[("source","newsletter")])]))],
  [[A[0],"foo"]])
case("alias links two IDs and changes no cookie", "alias('foo','bar') / anonymous",
  [step(kmq("b1",1,"alias","foo","bar"), st(A[0],None,[a_req("foo","bar",1)])),
   step(kmq("b1",2,"alias","foo","foo"), st(A[0],None,[]))],
  [["foo","bar"]])
case("KM.i() is the anonymous ID; clearIdentity does nothing", "KM.i() and clearIdentity / anonymous",
  [step(kmq("b1",1,"clearIdentity"), st(A[0],None,[])),
   step(kmq("b1",2,"clearIdentity"), st(A[0],None,[])),
   step(kmq("b1",3,"set",{"plan":"pro"}), st(A[0],None,[s_req(A[0],3,[("plan","pro")])]))],
  [[A[0]]])
# ---- identified column
case("identify on an identified browser switches without aliasing", "identify('foo') / identified",
  [step(kmq("b1",1,"identify","bill"), st(A[0],"bill",[a_req(A[0],"bill",1)])),
   step(kmq("b1",2,"identify","foo"), st(A[0],"foo",[])),
   step(kmq("b1",3,"record","Viewed"), st(A[0],"foo",[e_req("Viewed","foo",3)]))],
  [[A[0],"bill"],["foo"]])
case("identify with the current named ID does nothing", "identify('foo') again / identified",
  [step(kmq("b1",1,"identify","foo"), st(A[0],"foo",[a_req(A[0],"foo",1)])),
   step(kmq("b1",2,"identify","foo"), st(A[0],"foo",[]))],
  [[A[0],"foo"]])
case("identify with an empty value logs out", "identify('') / identified",
  [step(kmq("b1",1,"identify","foo"), st(A[0],"foo",[a_req(A[0],"foo",1)])),
   step(kmq("b1",2,"identify",""), st(A[1],None,[])),
   step(kmq("b1",3,"record","Viewed"), st(A[1],None,[e_req("Viewed",A[1],3)]))],
  [[A[0],"foo"],[A[1]]])
case("tracked form on an identified browser does not re-identify", "trackSubmit / identified",
  [step({"browser":"b1","at":1,"cookies":{"km_ai":A[0],"km_ni":"bill"},"submit":{"event":"Contact","fields":[
      {"name":"email","type":"text","value":"other@x.example"},{"name":"topic","type":"text","value":"help"}]}},
      st(A[0],"bill",[e_req("Contact","bill",1,[("email","other@x.example"),("topic","help")])]))],
  [["bill"]])
case("kmi link on an identified browser switches without aliasing", "URL kmi=foo / identified",
  [step({"browser":"b1","at":1,"cookies":{"km_ai":A[0],"km_ni":"bill"},"visit":"/?km_i=foo"}, st(A[0],"foo",[]))],
  [])
case("alias on an identified browser", "alias('foo','bar') / identified",
  [step({"browser":"b1","at":1,"cookies":{"km_ai":A[0],"km_ni":"bill"},"kmq":["alias","bill","bill@x.example"]},
        st(A[0],"bill",[a_req("bill","bill@x.example",1)]))],
  [["bill","bill@x.example"]])
case("KM.i() is the named ID; clearIdentity makes a new anonymous ID", "KM.i() and clearIdentity / identified",
  [step(kmq("b1",1,"identify","bill"), st(A[0],"bill",[a_req(A[0],"bill",1)])),
   step(kmq("b1",2,"clearIdentity"), st(A[1],None,[])),
   step(kmq("b1",3,"record","Viewed"), st(A[1],None,[e_req("Viewed",A[1],3)])),
   step(kmq("b1",4,"clearIdentity"), st(A[1],None,[]))],
  [[A[0],"bill"],[A[1]]])
case("cleared cookies: a new visitor", "arrives after clearing cookies / anonymous",
  [step(kmq("b1",1,"identify","bill"), st(A[0],"bill",[a_req(A[0],"bill",1)])),
   step({"browser":"b1","at":2,"clear_cookies":True}, st(A[1],None,[])),
   step(kmq("b1",3,"record","Viewed"), st(A[1],None,[e_req("Viewed",A[1],3)]))],
  [[A[0],"bill"],[A[1]]])
# ---- consequences
case("two named IDs in one browser stay two people", "consequence: bill then bob",
  [step(kmq("b1",1,"identify","bill"), st(A[0],"bill",[a_req(A[0],"bill",1)])),
   step(kmq("b1",2,"record","Read"), st(A[0],"bill",[e_req("Read","bill",2)])),
   step(kmq("b1",3,"identify","bob"), st(A[0],"bob",[])),
   step(kmq("b1",4,"record","Wrote"), st(A[0],"bob",[e_req("Wrote","bob",4)]))],
  [[A[0],"bill"],["bob"]], {"bill":["Read"],"bob":["Wrote"]})
case("cross-domain kmi makes the first domain's ID named on the second", "consequence: cross-domain",
  [step(kmq("b1",1,"record","Viewed A"), st(A[0],None,[e_req("Viewed A",A[0],1)])),
   step({"browser":"b2","at":2,"visit":"https://two.example/?kmi="+enc(A[0])}, st(B[0],A[0],[a_req(B[0],A[0],2)])),
   step(kmq("b2",3,"identify","carol@x.example"), st(B[0],"carol@x.example",[])),
   step(kmq("b2",4,"record","Signed Up"), st(B[0],"carol@x.example",[e_req("Signed Up","carol@x.example",4)]))],
  [[A[0],B[0]],["carol@x.example"]])
case("cross-domain fix: the site aliases KM.i() to the email", "consequence: cross-domain alias",
  [step({"browser":"b2","at":1,"visit":"https://two.example/?kmi="+enc(A[0])}, st(B[0],A[0],[a_req(B[0],A[0],1)])),
   step(kmq("b2",2,"alias",A[0],"carol@x.example"), st(B[0],A[0],[a_req(A[0],"carol@x.example",2)])),
   step(kmq("b2",3,"identify","carol@x.example"), st(B[0],"carol@x.example",[]))],
  [[A[0],B[0],"carol@x.example"]])
case("shared computer without clearIdentity attributes to the previous user", "consequence: shared computer",
  [step(kmq("b1",1,"identify","bill"), st(A[0],"bill",[a_req(A[0],"bill",1)])),
   step(kmq("b1",2,"record","Logged Out"), st(A[0],"bill",[e_req("Logged Out","bill",2)])),
   step(kmq("b1",3,"record","Viewed"), st(A[0],"bill",[e_req("Viewed","bill",3)])),
   step(kmq("b1",4,"clearIdentity"), st(A[1],None,[])),
   step(kmq("b1",5,"record","Viewed"), st(A[1],None,[e_req("Viewed",A[1],5)]))],
  [[A[0],"bill"],[A[1]]], {"bill":["Logged Out","Viewed"]})
case("identifying everyone as guest squishes nobody in idgraph", "consequence: squishing",
  [step(kmq("b1",1,"record","Landed"), st(A[0],None,[e_req("Landed",A[0],1)])),
   step(kmq("b2",2,"record","Landed"), st(B[0],None,[e_req("Landed",B[0],2)])),
   step(kmq("b1",3,"identify","guest"), st(A[0],"guest",[a_req(A[0],"guest",3)])),
   step(kmq("b2",4,"identify","guest"), st(B[0],"guest",[a_req(B[0],"guest",4)])),
   step(kmq("b1",5,"record","Viewed"), st(A[0],"guest",[e_req("Viewed","guest",5)]))],
  [[A[0]],[B[0]],["guest"]], {"guest":["Viewed"]})
doc={"about":"Identity-rule vectors: each case replays tracker commands (the `idgraph simulate` line format, under \"do\") from fresh browsers whose anonymous IDs are listed in anon_ids, and states the cookies, KM.i() and requests after every step, and the persons (and optionally their event names in order) in the store at the end. Run by tests/rules.rs and, later, by the browser tracker's test.",
     "key":K, "anon_ids":{"b1":A,"b2":B}, "cases":cases}
print(json.dumps(doc, indent=1))
