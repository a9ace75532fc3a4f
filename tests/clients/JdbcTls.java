// pgJDBC through pgshard with sslmode=verify-full against the test CA: connects, checks the
// connection is encrypted, and runs a prepared statement.
// Usage: java -cp postgresql.jar JdbcTls.java PORT CA_FILE. Exits non-zero on any failure.

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;

public class JdbcTls {
    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/app?sslmode=verify-full"
                + "&sslrootcert=" + args[1] + "&user=app&password=app";
        try (Connection conn = DriverManager.getConnection(url)) {
            try (PreparedStatement st = conn.prepareStatement("SELECT ?::int + 1")) {
                st.setInt(1, 41);
                try (ResultSet rs = st.executeQuery()) {
                    if (!rs.next() || rs.getInt(1) != 42) {
                        throw new AssertionError("wrong result");
                    }
                }
            }
        }
        System.out.println("jdbc: verify-full ok");
    }
}
