//! Universal Prompt vectors. The `id_token`s were made with PyJWT 2.15 (the JWT library of
//! Duo's Python SDK) for a fixed clock; the request JWT and client assertion this crate signs
//! for fixed inputs are pinned, and were checked with PyJWT (`jwt.decode(…, algorithms=
//! ["HS512"], audience=…)`).
#![cfg(feature = "universal")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use duo_auth::universal::{self, Credentials};
use duo_auth::{Error, Secret};

const CLIENT_ID: &str = "DIXXXXXXXXXXXXXXXXXX";
const SECRET: &str = "deadbeefdeadbeefdeadbeefdeadbeefdeadbeef";
const HOST: &str = "api-xxxxxxx.test.duosecurity.com";
const NOW: i64 = 1_700_000_000;
const USER: &str = "alice";
const NONCE: &str = "abcdefghijklmnopqrstuvwxyzabcdef";

const GOOD: &str =
    "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJhdXRoX3Jlc3VsdCI6eyJyZXN1bHQiOiJhbGxvdyIsInN0YXR1cyI6ImFsbG93Iiwic3RhdHVzX21zZyI6IkxvZ2luIFN1Y2Nlc3NmdWwifSwiYXV0aF9jb250ZXh0Ijp7ImZhY3RvciI6ImR1b19wdXNoIiwicmVzdWx0Ijoic3VjY2VzcyIsInR4aWQiOiJiNGUxYzNhMi0wMDAwLTQwMDAtODAwMC0wMDAwMDAwMDAwMDEiLCJ1c2VyIjp7Im5hbWUiOiJhbGljZSJ9fSwiYXVkIjoiRElYWFhYWFhYWFhYWFhYWFhYWFgiLCJhdXRoX3RpbWUiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMDMwMCwiaWF0IjoxNzAwMDAwMDAwLCJpc3MiOiJodHRwczovL2FwaS14eHh4eHh4LnRlc3QuZHVvc2VjdXJpdHkuY29tL29hdXRoL3YxL3Rva2VuIiwicHJlZmVycmVkX3VzZXJuYW1lIjoiYWxpY2UiLCJub25jZSI6ImFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6YWJjZGVmIn0.1ElEv_xYmw1GdJpcFsBRUxbDTJi-8Yo4bsOiRhJ7cKn2OZ4687M5aYe4S1L_dJVl8JuvDGb2FHqV3U3asnVVMw";
const FLOAT_TIMES: &str =
    "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJhdXRoX3Jlc3VsdCI6eyJyZXN1bHQiOiJhbGxvdyIsInN0YXR1cyI6ImFsbG93Iiwic3RhdHVzX21zZyI6IkxvZ2luIFN1Y2Nlc3NmdWwifSwiYXV0aF9jb250ZXh0Ijp7ImZhY3RvciI6ImR1b19wdXNoIiwicmVzdWx0Ijoic3VjY2VzcyIsInR4aWQiOiJiNGUxYzNhMi0wMDAwLTQwMDAtODAwMC0wMDAwMDAwMDAwMDEiLCJ1c2VyIjp7Im5hbWUiOiJhbGljZSJ9fSwiYXVkIjoiRElYWFhYWFhYWFhYWFhYWFhYWFgiLCJhdXRoX3RpbWUiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMDMwMC41LCJpYXQiOjE3MDAwMDAwMDAuMjUsImlzcyI6Imh0dHBzOi8vYXBpLXh4eHh4eHgudGVzdC5kdW9zZWN1cml0eS5jb20vb2F1dGgvdjEvdG9rZW4iLCJwcmVmZXJyZWRfdXNlcm5hbWUiOiJhbGljZSIsIm5vbmNlIjoiYWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXphYmNkZWYifQ.SLKhMy4EVk2PnZi28V3YVFA2_VgoGURhWkuwK3Q7HqeoQCNI9f_klcsr_mWsyfojr0bFiN4RX4HBp0m5nyWsug";
const WRONG_SECRET: &str =
    "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJhdXRoX3Jlc3VsdCI6eyJyZXN1bHQiOiJhbGxvdyIsInN0YXR1cyI6ImFsbG93Iiwic3RhdHVzX21zZyI6IkxvZ2luIFN1Y2Nlc3NmdWwifSwiYXV0aF9jb250ZXh0Ijp7ImZhY3RvciI6ImR1b19wdXNoIiwicmVzdWx0Ijoic3VjY2VzcyIsInR4aWQiOiJiNGUxYzNhMi0wMDAwLTQwMDAtODAwMC0wMDAwMDAwMDAwMDEiLCJ1c2VyIjp7Im5hbWUiOiJhbGljZSJ9fSwiYXVkIjoiRElYWFhYWFhYWFhYWFhYWFhYWFgiLCJhdXRoX3RpbWUiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMDMwMCwiaWF0IjoxNzAwMDAwMDAwLCJpc3MiOiJodHRwczovL2FwaS14eHh4eHh4LnRlc3QuZHVvc2VjdXJpdHkuY29tL29hdXRoL3YxL3Rva2VuIiwicHJlZmVycmVkX3VzZXJuYW1lIjoiYWxpY2UiLCJub25jZSI6ImFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6YWJjZGVmIn0.UZLtoXYJucBqtfHqRju8K6b2MvYdZ3RktBET6aRHwE1oVOJmfsUBcyLCeDzv8eUmllhtFjzdXzpk7c9Z85jCow";
const WRONG_AUD: &str =
    "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJhdXRoX3Jlc3VsdCI6eyJyZXN1bHQiOiJhbGxvdyIsInN0YXR1cyI6ImFsbG93Iiwic3RhdHVzX21zZyI6IkxvZ2luIFN1Y2Nlc3NmdWwifSwiYXV0aF9jb250ZXh0Ijp7ImZhY3RvciI6ImR1b19wdXNoIiwicmVzdWx0Ijoic3VjY2VzcyIsInR4aWQiOiJiNGUxYzNhMi0wMDAwLTQwMDAtODAwMC0wMDAwMDAwMDAwMDEiLCJ1c2VyIjp7Im5hbWUiOiJhbGljZSJ9fSwiYXVkIjoiRElYWFhYWFhYWFhYWFhYWFhYWFkiLCJhdXRoX3RpbWUiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMDMwMCwiaWF0IjoxNzAwMDAwMDAwLCJpc3MiOiJodHRwczovL2FwaS14eHh4eHh4LnRlc3QuZHVvc2VjdXJpdHkuY29tL29hdXRoL3YxL3Rva2VuIiwicHJlZmVycmVkX3VzZXJuYW1lIjoiYWxpY2UiLCJub25jZSI6ImFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6YWJjZGVmIn0.5_hkIZeYZfl4QM6LrIljQNzIo_rSP_-7EjpL0Nl1I_xU-ZAVUjTOOgrTSYOm0vtDk2-gFrKsnc49bcIxn2o9Tw";
const WRONG_ISS: &str =
    "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJhdXRoX3Jlc3VsdCI6eyJyZXN1bHQiOiJhbGxvdyIsInN0YXR1cyI6ImFsbG93Iiwic3RhdHVzX21zZyI6IkxvZ2luIFN1Y2Nlc3NmdWwifSwiYXV0aF9jb250ZXh0Ijp7ImZhY3RvciI6ImR1b19wdXNoIiwicmVzdWx0Ijoic3VjY2VzcyIsInR4aWQiOiJiNGUxYzNhMi0wMDAwLTQwMDAtODAwMC0wMDAwMDAwMDAwMDEiLCJ1c2VyIjp7Im5hbWUiOiJhbGljZSJ9fSwiYXVkIjoiRElYWFhYWFhYWFhYWFhYWFhYWFgiLCJhdXRoX3RpbWUiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMDMwMCwiaWF0IjoxNzAwMDAwMDAwLCJpc3MiOiJodHRwczovL2V2aWwuZXhhbXBsZS5jb20vb2F1dGgvdjEvdG9rZW4iLCJwcmVmZXJyZWRfdXNlcm5hbWUiOiJhbGljZSIsIm5vbmNlIjoiYWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXphYmNkZWYifQ.uFw9cz-HFrjnXZLNop7J0wf8YjTeG4KDHOKqMKWLF7bjkf7Yh_-ilaRVC9dHxhEpxz96SfLE838u92gdF-2ixw";
const EXPIRED: &str =
    "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJhdXRoX3Jlc3VsdCI6eyJyZXN1bHQiOiJhbGxvdyIsInN0YXR1cyI6ImFsbG93Iiwic3RhdHVzX21zZyI6IkxvZ2luIFN1Y2Nlc3NmdWwifSwiYXV0aF9jb250ZXh0Ijp7ImZhY3RvciI6ImR1b19wdXNoIiwicmVzdWx0Ijoic3VjY2VzcyIsInR4aWQiOiJiNGUxYzNhMi0wMDAwLTQwMDAtODAwMC0wMDAwMDAwMDAwMDEiLCJ1c2VyIjp7Im5hbWUiOiJhbGljZSJ9fSwiYXVkIjoiRElYWFhYWFhYWFhYWFhYWFhYWFgiLCJhdXRoX3RpbWUiOjE3MDAwMDAwMDAsImV4cCI6MTY5OTk5OTkzOSwiaWF0IjoxNzAwMDAwMDAwLCJpc3MiOiJodHRwczovL2FwaS14eHh4eHh4LnRlc3QuZHVvc2VjdXJpdHkuY29tL29hdXRoL3YxL3Rva2VuIiwicHJlZmVycmVkX3VzZXJuYW1lIjoiYWxpY2UiLCJub25jZSI6ImFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6YWJjZGVmIn0.f0NPwFHiaSdVSI9v45Of_ziH9bptMwwxcJlRzR9HJKYvQQOlOVCCqaVuTnsejBrdg7QDV-nksm-my1dwveY7Ow";
const FUTURE_IAT: &str =
    "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJhdXRoX3Jlc3VsdCI6eyJyZXN1bHQiOiJhbGxvdyIsInN0YXR1cyI6ImFsbG93Iiwic3RhdHVzX21zZyI6IkxvZ2luIFN1Y2Nlc3NmdWwifSwiYXV0aF9jb250ZXh0Ijp7ImZhY3RvciI6ImR1b19wdXNoIiwicmVzdWx0Ijoic3VjY2VzcyIsInR4aWQiOiJiNGUxYzNhMi0wMDAwLTQwMDAtODAwMC0wMDAwMDAwMDAwMDEiLCJ1c2VyIjp7Im5hbWUiOiJhbGljZSJ9fSwiYXVkIjoiRElYWFhYWFhYWFhYWFhYWFhYWFgiLCJhdXRoX3RpbWUiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMDMwMCwiaWF0IjoxNzAwMDAwMDYxLCJpc3MiOiJodHRwczovL2FwaS14eHh4eHh4LnRlc3QuZHVvc2VjdXJpdHkuY29tL29hdXRoL3YxL3Rva2VuIiwicHJlZmVycmVkX3VzZXJuYW1lIjoiYWxpY2UiLCJub25jZSI6ImFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6YWJjZGVmIn0.OnYzElqlWVrWJ5ANC5q2uHFYtX0gA8MMdW4jrBlNfdBEsZZUAcjSGIOXbLFSgGyJtDc4sJsuzy3gAB92YGmyKQ";
const NO_IAT: &str =
    "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJhdXRoX3Jlc3VsdCI6eyJyZXN1bHQiOiJhbGxvdyIsInN0YXR1cyI6ImFsbG93Iiwic3RhdHVzX21zZyI6IkxvZ2luIFN1Y2Nlc3NmdWwifSwiYXV0aF9jb250ZXh0Ijp7ImZhY3RvciI6ImR1b19wdXNoIiwicmVzdWx0Ijoic3VjY2VzcyIsInR4aWQiOiJiNGUxYzNhMi0wMDAwLTQwMDAtODAwMC0wMDAwMDAwMDAwMDEiLCJ1c2VyIjp7Im5hbWUiOiJhbGljZSJ9fSwiYXVkIjoiRElYWFhYWFhYWFhYWFhYWFhYWFgiLCJhdXRoX3RpbWUiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMDMwMCwiaXNzIjoiaHR0cHM6Ly9hcGkteHh4eHh4eC50ZXN0LmR1b3NlY3VyaXR5LmNvbS9vYXV0aC92MS90b2tlbiIsInByZWZlcnJlZF91c2VybmFtZSI6ImFsaWNlIiwibm9uY2UiOiJhYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5emFiY2RlZiJ9.4orxXRnnjjJWTXHkJsU4HdzPRBnHcOgqUmfIp6nKWEyiPsespJ94KDncc6e5X5myHmE8pZrorBKuK-aFTYO4ew";
const NO_EXP: &str =
    "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJhdXRoX3Jlc3VsdCI6eyJyZXN1bHQiOiJhbGxvdyIsInN0YXR1cyI6ImFsbG93Iiwic3RhdHVzX21zZyI6IkxvZ2luIFN1Y2Nlc3NmdWwifSwiYXV0aF9jb250ZXh0Ijp7ImZhY3RvciI6ImR1b19wdXNoIiwicmVzdWx0Ijoic3VjY2VzcyIsInR4aWQiOiJiNGUxYzNhMi0wMDAwLTQwMDAtODAwMC0wMDAwMDAwMDAwMDEiLCJ1c2VyIjp7Im5hbWUiOiJhbGljZSJ9fSwiYXVkIjoiRElYWFhYWFhYWFhYWFhYWFhYWFgiLCJhdXRoX3RpbWUiOjE3MDAwMDAwMDAsImlhdCI6MTcwMDAwMDAwMCwiaXNzIjoiaHR0cHM6Ly9hcGkteHh4eHh4eC50ZXN0LmR1b3NlY3VyaXR5LmNvbS9vYXV0aC92MS90b2tlbiIsInByZWZlcnJlZF91c2VybmFtZSI6ImFsaWNlIiwibm9uY2UiOiJhYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5emFiY2RlZiJ9.j7rVeIeEIQkLk97Bs9GTbM4X5zONff4N2tirvfkLNCjmn-XNX7778_mAkEIN3QQ-6cPKmXarGj9OgoNL_xpE4Q";
const OTHER_USER: &str =
    "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJhdXRoX3Jlc3VsdCI6eyJyZXN1bHQiOiJhbGxvdyIsInN0YXR1cyI6ImFsbG93Iiwic3RhdHVzX21zZyI6IkxvZ2luIFN1Y2Nlc3NmdWwifSwiYXV0aF9jb250ZXh0Ijp7ImZhY3RvciI6ImR1b19wdXNoIiwicmVzdWx0Ijoic3VjY2VzcyIsInR4aWQiOiJiNGUxYzNhMi0wMDAwLTQwMDAtODAwMC0wMDAwMDAwMDAwMDEiLCJ1c2VyIjp7Im5hbWUiOiJhbGljZSJ9fSwiYXVkIjoiRElYWFhYWFhYWFhYWFhYWFhYWFgiLCJhdXRoX3RpbWUiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMDMwMCwiaWF0IjoxNzAwMDAwMDAwLCJpc3MiOiJodHRwczovL2FwaS14eHh4eHh4LnRlc3QuZHVvc2VjdXJpdHkuY29tL29hdXRoL3YxL3Rva2VuIiwicHJlZmVycmVkX3VzZXJuYW1lIjoibWFsbG9yeSIsIm5vbmNlIjoiYWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXphYmNkZWYifQ.lG80aMgGwrX48b-bFODwizlmSx9GU6ogKW3eCgdoSjGw4O7JW38vIVrotmRr0HeTeuaxE3bImyHfE2JeHCgH0w";
const WRONG_NONCE: &str =
    "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJhdXRoX3Jlc3VsdCI6eyJyZXN1bHQiOiJhbGxvdyIsInN0YXR1cyI6ImFsbG93Iiwic3RhdHVzX21zZyI6IkxvZ2luIFN1Y2Nlc3NmdWwifSwiYXV0aF9jb250ZXh0Ijp7ImZhY3RvciI6ImR1b19wdXNoIiwicmVzdWx0Ijoic3VjY2VzcyIsInR4aWQiOiJiNGUxYzNhMi0wMDAwLTQwMDAtODAwMC0wMDAwMDAwMDAwMDEiLCJ1c2VyIjp7Im5hbWUiOiJhbGljZSJ9fSwiYXVkIjoiRElYWFhYWFhYWFhYWFhYWFhYWFgiLCJhdXRoX3RpbWUiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMDMwMCwiaWF0IjoxNzAwMDAwMDAwLCJpc3MiOiJodHRwczovL2FwaS14eHh4eHh4LnRlc3QuZHVvc2VjdXJpdHkuY29tL29hdXRoL3YxL3Rva2VuIiwicHJlZmVycmVkX3VzZXJuYW1lIjoiYWxpY2UiLCJub25jZSI6ImJiY2NlZWdnaWlra21tb29xcXNzdXV3d3l5YWFjY2VlIn0.PmtUWvnBJmzkQmGJ3aBWDxpioxJ4xM0bIHuJSuKCxNn-kmbEI-Li14DPVWwk3_jd_0RrkMjFiC-T6BBmxFse8A";
const HS256: &str =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJhdXRoX3Jlc3VsdCI6eyJyZXN1bHQiOiJhbGxvdyIsInN0YXR1cyI6ImFsbG93Iiwic3RhdHVzX21zZyI6IkxvZ2luIFN1Y2Nlc3NmdWwifSwiYXV0aF9jb250ZXh0Ijp7ImZhY3RvciI6ImR1b19wdXNoIiwicmVzdWx0Ijoic3VjY2VzcyIsInR4aWQiOiJiNGUxYzNhMi0wMDAwLTQwMDAtODAwMC0wMDAwMDAwMDAwMDEiLCJ1c2VyIjp7Im5hbWUiOiJhbGljZSJ9fSwiYXVkIjoiRElYWFhYWFhYWFhYWFhYWFhYWFgiLCJhdXRoX3RpbWUiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMDMwMCwiaWF0IjoxNzAwMDAwMDAwLCJpc3MiOiJodHRwczovL2FwaS14eHh4eHh4LnRlc3QuZHVvc2VjdXJpdHkuY29tL29hdXRoL3YxL3Rva2VuIiwicHJlZmVycmVkX3VzZXJuYW1lIjoiYWxpY2UiLCJub25jZSI6ImFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6YWJjZGVmIn0.ij6hlFfpUTbqjwC1pwcE_myJvzVWmTRe6K1HzyR6L94";
const DENY: &str =
    "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJhdXRoX3Jlc3VsdCI6eyJyZXN1bHQiOiJkZW55Iiwic3RhdHVzIjoiZGVueSIsInN0YXR1c19tc2ciOiJMb2dpbiBkZW5pZWQifSwiYXV0aF9jb250ZXh0Ijp7ImZhY3RvciI6ImR1b19wdXNoIiwicmVzdWx0Ijoic3VjY2VzcyIsInR4aWQiOiJiNGUxYzNhMi0wMDAwLTQwMDAtODAwMC0wMDAwMDAwMDAwMDEiLCJ1c2VyIjp7Im5hbWUiOiJhbGljZSJ9fSwiYXVkIjoiRElYWFhYWFhYWFhYWFhYWFhYWFgiLCJhdXRoX3RpbWUiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMDMwMCwiaWF0IjoxNzAwMDAwMDAwLCJpc3MiOiJodHRwczovL2FwaS14eHh4eHh4LnRlc3QuZHVvc2VjdXJpdHkuY29tL29hdXRoL3YxL3Rva2VuIiwicHJlZmVycmVkX3VzZXJuYW1lIjoiYWxpY2UiLCJub25jZSI6ImFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6YWJjZGVmIn0.MuU_Fxk9AXAhtKeCFoNVc2iyRgE-lv7pkn9b7cMORMkCeUulaP7kA7gJQiED8Z6PuAAwTkKP4f8D6Ys5wme6ng";
const ALG_NONE: &str =
    "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJhdXRoX3Jlc3VsdCI6eyJyZXN1bHQiOiJhbGxvdyIsInN0YXR1cyI6ImFsbG93Iiwic3RhdHVzX21zZyI6IkxvZ2luIFN1Y2Nlc3NmdWwifSwiYXV0aF9jb250ZXh0Ijp7ImZhY3RvciI6ImR1b19wdXNoIiwicmVzdWx0Ijoic3VjY2VzcyIsInR4aWQiOiJiNGUxYzNhMi0wMDAwLTQwMDAtODAwMC0wMDAwMDAwMDAwMDEiLCJ1c2VyIjp7Im5hbWUiOiJhbGljZSJ9fSwiYXVkIjoiRElYWFhYWFhYWFhYWFhYWFhYWFgiLCJhdXRoX3RpbWUiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMDMwMCwiaWF0IjoxNzAwMDAwMDAwLCJpc3MiOiJodHRwczovL2FwaS14eHh4eHh4LnRlc3QuZHVvc2VjdXJpdHkuY29tL29hdXRoL3YxL3Rva2VuIiwicHJlZmVycmVkX3VzZXJuYW1lIjoiYWxpY2UiLCJub25jZSI6ImFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6YWJjZGVmIn0.";

fn creds() -> Credentials {
    Credentials::new(CLIENT_ID, Secret::new(SECRET), HOST).unwrap()
}

fn check(
    token: &str,
    user: &str,
    nonce: Option<&str>,
    now: i64,
) -> Result<universal::IdToken, Error> {
    universal::validate_id_token(&creds(), token, user, nonce, now)
}

#[test]
fn a_pyjwt_token_validates() {
    let t = check(GOOD, USER, Some(NONCE), NOW).unwrap();
    assert!(t.allowed());
    assert_eq!(t.preferred_username, USER);
    assert_eq!(t.nonce.as_deref(), Some(NONCE));
    assert_eq!(t.auth_result.status_msg, "Login Successful");
    assert_eq!(t.auth_context["factor"], "duo_push");
    assert_eq!((t.iat, t.exp, t.auth_time), (NOW, NOW + 300, Some(NOW)));
    // No nonce asked for: the token's is not checked.
    check(GOOD, USER, None, NOW).unwrap();
    // Float times, as Python writes them.
    check(FLOAT_TIMES, USER, None, NOW).unwrap();
    // A deny is a valid token that does not allow.
    assert!(!check(DENY, USER, None, NOW).unwrap().allowed());
}

#[test]
fn leeway_is_sixty_seconds() {
    check(GOOD, USER, None, NOW + 300 + 59).unwrap();
    assert!(check(GOOD, USER, None, NOW + 300 + 60).is_err());
    check(GOOD, USER, None, NOW - 60).unwrap();
    assert!(check(GOOD, USER, None, NOW - 61).is_err());
}

#[test]
fn every_tampering_is_refused() {
    for (name, token, user, nonce) in [
        ("wrong secret", WRONG_SECRET, USER, None),
        ("wrong audience", WRONG_AUD, USER, None),
        ("wrong issuer", WRONG_ISS, USER, None),
        ("expired", EXPIRED, USER, None),
        ("issued in the future", FUTURE_IAT, USER, None),
        ("no iat", NO_IAT, USER, None),
        ("no exp", NO_EXP, USER, None),
        ("other user", OTHER_USER, USER, None),
        ("asked for another user", GOOD, "bob", None),
        ("wrong nonce", WRONG_NONCE, USER, Some(NONCE)),
        (
            "another nonce asked",
            GOOD,
            USER,
            Some("bbcceeggiikkmmooqqssuuwwyyaaccee"),
        ),
        ("HS256", HS256, USER, None),
        ("alg none", ALG_NONE, USER, None),
        ("garbage", "not.a.jwt", USER, None),
        ("empty", "", USER, None),
    ] {
        match check(token, user, nonce, NOW) {
            Err(e @ Error::InvalidToken(_)) => {
                assert!(!e.may_fail_open(), "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    // The right token under another secret.
    let other = Credentials::new(CLIENT_ID, Secret::new("x".repeat(40)), HOST).unwrap();
    assert!(universal::validate_id_token(&other, GOOD, USER, None, NOW).is_err());
}

const REQUEST_STATE: &str = "abcdefghijklmnopqrstuvwxyz0123456789";
const REDIRECT: &str = "https://portal.example.com/duo/callback";

#[test]
fn request_jwt_claims() {
    let c = creds();
    let jwt = universal::request_jwt(&c, USER, REQUEST_STATE, REDIRECT, NOW).unwrap();
    let claims = universal::decode_hs512(&jwt, &Secret::new(SECRET)).unwrap();
    assert_eq!(
        claims,
        serde_json::json!({
            "scope": "openid",
            "redirect_uri": REDIRECT,
            "client_id": CLIENT_ID,
            "iss": CLIENT_ID,
            "aud": format!("https://{HOST}"),
            "exp": NOW + 300,
            "state": REQUEST_STATE,
            "response_type": "code",
            "duo_uname": USER,
            "use_duo_code_attribute": true,
        })
    );
    assert!(universal::decode_hs512(&jwt, &Secret::new("y".repeat(40))).is_err());
    assert_eq!(jwt, PINNED_REQUEST_JWT);

    let url =
        universal::authorization_url(&c, USER, REQUEST_STATE, REDIRECT, Some(NONCE), NOW).unwrap();
    assert_eq!(
        url,
        format!(
            "https://{HOST}/oauth/v1/authorize?response_type=code&client_id={CLIENT_ID}\
             &request={PINNED_REQUEST_JWT}&nonce={NONCE}"
        )
    );
}

#[test]
fn client_assertion_claims() {
    let c = creds();
    let jti = "0123456789abcdefghijklmnopqrstuvwxyz";
    let a = universal::client_assertion(&c, &c.token_endpoint(), jti, NOW).unwrap();
    let claims = universal::decode_hs512(&a, &Secret::new(SECRET)).unwrap();
    assert_eq!(
        claims,
        serde_json::json!({
            "iss": CLIENT_ID, "sub": CLIENT_ID, "aud": format!("https://{HOST}/oauth/v1/token"),
            "exp": NOW + 300, "jti": jti,
        })
    );
    assert_eq!(a, PINNED_ASSERTION);
    let form = universal::token_request_params(&c, "CODE", REDIRECT, &a);
    let keys: Vec<&str> = form.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "grant_type",
            "code",
            "redirect_uri",
            "client_id",
            "client_assertion_type",
            "client_assertion"
        ]
    );
}

const PINNED_REQUEST_JWT: &str =
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzUxMiJ9.eyJzY29wZSI6Im9wZW5pZCIsInJlZGlyZWN0X3VyaSI6Imh0dHBzOi8vcG9ydGFsLmV4YW1wbGUuY29tL2R1by9jYWxsYmFjayIsImNsaWVudF9pZCI6IkRJWFhYWFhYWFhYWFhYWFhYWFhYIiwiaXNzIjoiRElYWFhYWFhYWFhYWFhYWFhYWFgiLCJhdWQiOiJodHRwczovL2FwaS14eHh4eHh4LnRlc3QuZHVvc2VjdXJpdHkuY29tIiwiZXhwIjoxNzAwMDAwMzAwLCJzdGF0ZSI6ImFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6MDEyMzQ1Njc4OSIsInJlc3BvbnNlX3R5cGUiOiJjb2RlIiwiZHVvX3VuYW1lIjoiYWxpY2UiLCJ1c2VfZHVvX2NvZGVfYXR0cmlidXRlIjp0cnVlfQ.YOgBe4zMeHNByWIKCUFkMjFS1AR4CVDnJS95xnI0tvBcy_caMUNdmHGuHkwBoiBHiOXuNEuF4o-6OEx7-ErxqA";
const PINNED_ASSERTION: &str =
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzUxMiJ9.eyJpc3MiOiJESVhYWFhYWFhYWFhYWFhYWFhYWCIsInN1YiI6IkRJWFhYWFhYWFhYWFhYWFhYWFhYIiwiYXVkIjoiaHR0cHM6Ly9hcGkteHh4eHh4eC50ZXN0LmR1b3NlY3VyaXR5LmNvbS9vYXV0aC92MS90b2tlbiIsImV4cCI6MTcwMDAwMDMwMCwianRpIjoiMDEyMzQ1Njc4OWFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6In0.Wak4az3BOk7v42jX5yBrsNE202hoZSHpyaoRJSpGypntpGNaa7S7jlJ7lL2o_MzuyLdOSe52ARjTCysWgqCR5Q";
