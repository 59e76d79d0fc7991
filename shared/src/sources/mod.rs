//! Where characters' source texts come from besides pasted text (issue 13: Wikipedia, Baidu
//! Baike, any web page). So far: [`fetch`], the guarded fetcher every web source goes through.

pub mod fetch;
