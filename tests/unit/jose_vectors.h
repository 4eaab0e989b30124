/*
 * jose_vectors.h: fixed test keys and tokens for test_jose.c, made once
 * outside this code base so the tests compare against an independent
 * implementation:
 *   openssl ecparam -name prime256v1 -genkey -noout -out vec_ec.pem
 *   openssl genrsa -out vec_rsa.pem 2048
 * The JWKs and the three tokens were made from those files with Python's
 * `cryptography` package (public numbers base64url-encoded by hand; JWS
 * signing input header.payload, RS256 PKCS#1 v1.5, PS256 PSS with MGF1
 * SHA-256 and a 32-byte salt, ES256 with the DER signature decoded into
 * 32-byte R || S).  Claims of every token:
 *   {"iss":"https://idp.test","sub":"alice","aud":"portcullis",
 *    "exp":4102444800,"iat":1700000000,"groups":["dev","ops"]}
 * The libtrust kids were computed with
 *   openssl pkey -in F -pubout -outform DER | openssl dgst -sha256 \
 *     -binary | head -c 30 | python3 -c 'import sys, base64;
 *     s = base64.b32encode(sys.stdin.buffer.read()).decode();
 *     print(":".join(s[i:i+4] for i in range(0, 48, 4)))'
 * Test keys only: never use them for anything else.
 */
#define VEC_EC_LIBTRUST_KID \
    "NFDO:GI6B:KHEO:JYFH:AABP:G5DU:I4R2:XMWH:HVCA:5SKT:RL5Y:TRWM"
#define VEC_RSA_LIBTRUST_KID \
    "RQY6:E3O4:3VMR:TED2:WN56:2WS4:HUF7:RVYH:ZKCX:6HCE:TKAK:VCHD"

static const char vec_ec_pem[] =
    "-----BEGIN EC PRIVATE KEY-----\n"
    "MHcCAQEEIBJbKbKVEAxyfwFq8f5qoRfbf+/1I8DqPXtM4CIbnoY0oAoGCCqGSM49\n"
    "AwEHoUQDQgAE0nf+VH2sinYflq8Zv3JLTA7NAIXMjOHEKlfovLN3gWTUqSSxPb+4\n"
    "JRlgywKa5QNpNOdRLldIPENBNjZExM5EjA==\n"
    "-----END EC PRIVATE KEY-----\n";

static const char vec_rsa_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQCwxDDkIPEMQVWE\n"
    "ACAAz1bTssHLCGPwOOQb14ePjZ5Uco5KwAcgT27g6fXMXNkCIfUxnCfL7EMTpINU\n"
    "0iLcCqLcYme/M738fWKdFwjQzhzDyA6itdzLAy8zyVwoIds9C7fM6ZdLC0A4Tbl6\n"
    "0/nqxqs9zGYGO3RpxklNiEGh7cnJ4Yz4f8tRB60Uc7wsQdYJyuRcAgBlMtQvx6Me\n"
    "Z2GjFWBqCiI09cWTrqUgY/+PbRzwJx2IUcDQYKeUEj/zte1SPwYwaQuYdnaYshGl\n"
    "9A1B6oI6FKMiPZVwnIQSlwLfHt06ee44goBc531WYqGCXWMJLv4VRuUtBKaxBdfI\n"
    "flnn6vxnAgMBAAECggEATJhWzyNvD+5njdE4DOHLL+RvkPjLxVYBkgbsmMm258TT\n"
    "35QiAmApHZCDj9BTwFbSlnKh0/1Ge4Z32hNMQ6jgNTr21aUoF/aE+qj2ivQlBrjz\n"
    "jpHbYKS6mWgRZNp205b2R/aYNk5jv4H+czjTPGZl4VtmgiDVKthe/xehyPbuz2kQ\n"
    "fPr3koY1SLXr/k65rEEH6FP9zGSJOMGRie27DPnuNLlPkFv1xNVeIUYXTeS/u1/8\n"
    "UaYpHLN4mdcSj/y1aWaVkbjzOwkQ7BVfu+H3bHs4WCk8yB4wRZ5s8O7J7XMtCESO\n"
    "vlNsPFisHhfyTZTJXbOnw4fR42qAPxQJODkg4myJ4QKBgQD2i4jh5G95Z4Mq0ltO\n"
    "A7VsytJb5al9YdzAnDkcfGqqQUicIilY7T4DgMbkI+PeMJLySfy9wNWFeEntKHVb\n"
    "Ijfx4FVxFyemZa+7bXXXt0rPIL2cDQ61EJ9Am98xxdIhBqVtedaiqGeki3ABph55\n"
    "p+spWmlWYu87uYPsnF+KIY+HnwKBgQC3i5n3Dx0nFSzQ2UpAma89GnsvTan+bjEt\n"
    "zdIhgB69BcPiC2knNi2t6e3WdSU0AG7noun7ewedYcs0WcgRVImMteuR0KcalA8V\n"
    "04NIG5e9ve85Q7VWJR3the/z5LvmfIvoQwq/+gNCXcLJ7WHFpCUdFuQ3Q2sUKKvV\n"
    "m1dAdn32OQKBgQCphQvbdnyHl3sDCJyrKbWnVlYJxgIiKhXlggVq5slYw4avhHW1\n"
    "pXqMYhFfcKYPcoq3edQEjQDDww/ht33p6b9Z2owlNGyY5zZLw1nRt0AC51o4YGoK\n"
    "aaF2hTaUPJbdCnrYqXvBX9XTt+SN3bD6qVDyoC3priEcidSB7otqqOTNtQKBgHs6\n"
    "XsRggVIcBVqyiAeXJu//N3Uqz1bi5GG8LbgQLJL7q+e3gYGx/jklNWkmfTPMlqkt\n"
    "16nfj906KxOas5fvCepOuTnMvGQ7w2UD/MAMxnO9cT8hFj4f7Vfq9I7qory8IbJu\n"
    "UGlTkZydFoo7tcjby48cL1xrBxkhtTxUbt/4rdkBAoGBAI7TOzqSO+ERQ/SYbfMk\n"
    "6jnr73aoeD79/xFgqqT7+9cPRgUQ9xkCITwps94R3xm1kqiaTtlQ+S591A8+xutJ\n"
    "nIsSEvPkzJzwNqKVk89nRG83j00HxZHqYgPl6uaFFyQ+QGOfhKXcVc4CUtXFBnW+\n"
    "gGVTEQLgjE0MNHXpDw0hoEpz\n"
    "-----END PRIVATE KEY-----\n";

static const char vec_ec_jwk[] =
    "{\"kty\": \"EC\", \"crv\": \"P-256\", \"kid\": \"ec1\", \"x\": \"0nf-VH2sinYflq"
    "8Zv3JLTA7NAIXMjOHEKlfovLN3gWQ\", \"y\": \"1KkksT2_uCUZYMsCmuUDaTTnUS"
    "5XSDxDQTY2RMTORIw\"}";

static const char vec_rsa_jwk[] =
    "{\"kty\": \"RSA\", \"kid\": \"rsa1\", \"n\": \"sMQw5CDxDEFVhAAgAM9W07LBywhj"
    "8DjkG9eHj42eVHKOSsAHIE9u4On1zFzZAiH1MZwny-xDE6SDVNIi3Aqi3GJnvzO9"
    "_H1inRcI0M4cw8gOorXcywMvM8lcKCHbPQu3zOmXSwtAOE25etP56sarPcxmBjt0"
    "acZJTYhBoe3JyeGM-H_LUQetFHO8LEHWCcrkXAIAZTLUL8ejHmdhoxVgagoiNPXF"
    "k66lIGP_j20c8CcdiFHA0GCnlBI_87XtUj8GMGkLmHZ2mLIRpfQNQeqCOhSjIj2V"
    "cJyEEpcC3x7dOnnuOIKAXOd9VmKhgl1jCS7-FUblLQSmsQXXyH5Z5-r8Zw\", \"e\""
    ": \"AQAB\"}";

static const char vec_rs256[] =
    "eyJhbGciOiJSUzI1NiIsImtpZCI6InJzYTEiLCJ0eXAiOiJKV1QifQ.eyJpc3MiO"
    "iJodHRwczovL2lkcC50ZXN0Iiwic3ViIjoiYWxpY2UiLCJhdWQiOiJwb3J0Y3Vsb"
    "GlzIiwiZXhwIjo0MTAyNDQ0ODAwLCJpYXQiOjE3MDAwMDAwMDAsImdyb3VwcyI6W"
    "yJkZXYiLCJvcHMiXX0.WnZAN4apifFoPnDPWZ4siozZf3dqm1BGYNeGdz-Brl7_l"
    "VF7clIjEZ5qiw_tIFkfuqptQIJ0VvOsr3EwMsfCNL3uDxZ9lGpZRSLe_iOOtzkTd"
    "C5oOCYqn8wGl7h_MCR7IMTMxZHT-_uwnfKbz0J133oEaygSfbahpsLfcE4X1FS_o"
    "QbqiS5Fd-vBilPChlMgNBI9V_1Z88qYuv-LkeDbxv09Q6nW2IoaDGvezR-DH1t9I"
    "B7eMF_1uxQ3XwmDqAXw_NCMyzYSfqD3_X-Sh53PX53VvQQ7q1uI8VBJ2sWfe0SYI"
    "D3uPBstu38ZhQ6py9x72L7IPHZEAYk97G_bEU6TYA";

static const char vec_ps256[] =
    "eyJhbGciOiJQUzI1NiIsImtpZCI6InJzYTEiLCJ0eXAiOiJhdCtqd3QifQ.eyJpc"
    "3MiOiJodHRwczovL2lkcC50ZXN0Iiwic3ViIjoiYWxpY2UiLCJhdWQiOiJwb3J0Y"
    "3VsbGlzIiwiZXhwIjo0MTAyNDQ0ODAwLCJpYXQiOjE3MDAwMDAwMDAsImdyb3Vwc"
    "yI6WyJkZXYiLCJvcHMiXX0.F5dhasDFGLesIUKmosSPaB4mwd3eTVcyL4tY0lowH"
    "Yi1Us7qchEsJRV5gsQkneeCGZrMSVvXqI_VEJzWTUXvufm8sd0keqS0-SmoSpXWn"
    "Ieqh6aaRkU4ZcX0MhXqI41AkjI3QaMljwC1o4EtIRn8V-wLoCzqBYv2q4Yhzom2F"
    "UHnSSV7UNWbX3kPC7AF8JY9ND8f7EMiwm3q77XZhiRGl3utOBCUoMBZfHtLEy2XJ"
    "TtN7lg1-acOltwcY0lJRZk8qnxQtTEViHN53ipDs2Bu5MJ14nsy_BI_hPZ5nFvRQ"
    "TgI_Tuq6a0dsK2kIAvuKYQ12Vm-UYiGCKHQSkt3leVSGQ";

static const char vec_es256[] =
    "eyJhbGciOiJFUzI1NiIsImtpZCI6ImVjMSJ9.eyJpc3MiOiJodHRwczovL2lkcC5"
    "0ZXN0Iiwic3ViIjoiYWxpY2UiLCJhdWQiOiJwb3J0Y3VsbGlzIiwiZXhwIjo0MTA"
    "yNDQ0ODAwLCJpYXQiOjE3MDAwMDAwMDAsImdyb3VwcyI6WyJkZXYiLCJvcHMiXX0"
    ".IgJSI7YaHcQWVgV8cj6VUyHYK_mnroqY8VcGAGinj7qr4J85JbBHZGyPjp0xJl0"
    "iXYvAZdT5WVu5XiO26c2rBg";

